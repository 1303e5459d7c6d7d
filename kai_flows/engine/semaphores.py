"""Queue semaphores (Argo `synchronization.semaphores` with a configMapKeyRef into `kai-queues`), shared by every
engine process of this user: slot i of queue Q is an exclusive `flock` on `<dir>/<Q>.<i>.lock`. The kernel drops
a lock when its holder dies, so a killed engine never leaks a slot. The limit is the policy's concurrency.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class Slot:
    def __init__(self, key: str, fd: int) -> None:
        self.key = key
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class QueueSemaphores:
    def __init__(self, directory: Path, limits: dict[str, int]) -> None:
        self.directory = directory
        self.limits = limits
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def try_acquire(self, key: str) -> Slot | None:
        """One free slot of queue `key`, or None when all `concurrency` slots are held (here or elsewhere)."""
        with self._lock:
            for i in range(self.limits[key]):
                fd = os.open(self.directory / f"{key}.{i}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return Slot(key, fd)
        return None

    def try_acquire_all(self, keys: tuple[str, ...]) -> list[Slot] | None:
        held: list[Slot] = []
        for key in keys:
            slot = self.try_acquire(key)
            if slot is None:
                for s in held:
                    s.release()
                return None
            held.append(slot)
        return held
