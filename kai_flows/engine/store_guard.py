"""The run's artifact store as infrastructure: a dead store is the engine's fault to handle, never a step's.

When the store stops answering, re-running a step cannot help (camera poses would recompute the whole SfM and
fail its upload again, once per retry). So every store call of the engine goes through `GuardedStore`: an
unreachable store is brought back and the call made again; the step that was uploading never notices.
- the embedded SeaweedFS is watched (its process polled) and restarted on the same data folder and ports, so
  the store's endpoint, keys and every object it acknowledged stay as they were;
- an external S3 endpoint is waited for, up to `patience_s`.
When the store cannot come back, the run stops at once (`on_lost`, with one line saying so) and the run ends in
Error, as Argo ends a workflow whose artifact repository fails: no retries for a fault a retry cannot fix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kai_flows.store.errors import StoreError, StoreUnreachableError

POLL_S = 0.25
PATIENCE_S = 30.0  # how long an external S3 endpoint may stop answering before the run stops


class StoreLostError(StoreError):
    """The artifact store died and could not be brought back; the run stops."""


class StoreGuard:
    def __init__(self, store: Any, server: Any = None, *, patience_s: float | None = None,
                 on_lost: Callable[[str], None] = lambda _: None, note: Callable[[str], None] = lambda _: None) -> None:
        self.store, self.server = store, server
        self.patience_s = PATIENCE_S if patience_s is None else patience_s
        self.on_lost, self.note = on_lost, note
        self.lost = ""  # why the store is gone for good ("" while it is usable)
        self.restarts = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watch: threading.Thread | None = None

    def __enter__(self) -> StoreGuard:
        if self.server is not None:
            self._watch = threading.Thread(target=self._watch_server, name="kai-store-guard", daemon=True)
            self._watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        if self._watch is not None:
            self._watch.join()

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)`, made again once the store is back if it was unreachable."""
        try:
            return method(*args, **kwargs)
        except StoreUnreachableError as e:
            if not self.recover(str(e)):
                raise StoreLostError(self.lost) from None
            return method(*args, **kwargs)

    def recover(self, reason: str) -> bool:
        """Bring the store back (restart the embedded server, or wait for the endpoint); False: it is lost."""
        with self._lock:
            if self.lost:
                return False
            if self.server is not None:
                return self._restart(reason)
            deadline = time.monotonic() + self.patience_s
            while time.monotonic() < deadline and not self._closed.is_set():
                try:
                    self.store.ensure_bucket()
                    return True
                except StoreUnreachableError:
                    time.sleep(1.0)
            self._give_up(f"the artifact store stopped answering for {self.patience_s:g}s ({reason})")
            return False

    # ---------------------------------------------------------------- embedded server
    def _watch_server(self) -> None:
        while not self._closed.wait(POLL_S):
            if self.lost:
                return
            if not self.server.running:
                with self._lock:
                    if not self.server.running and not self.lost:
                        self._restart("its process exited")

    def _restart(self, reason: str) -> bool:
        if self.server.running:
            try:  # alive but not answering (yet): give it the patience an external store gets
                self.store.ensure_bucket()
                return True
            except StoreError:
                pass
        dead_pid = self.server.pid
        ports = tuple(self.server.ports[role] for role in ("master", "volume", "filer", "s3"))
        self.server.stop()  # reaps the dead process and releases the folder's lock
        self.server.fixed_ports = ports  # same endpoint: steps and clients keep their configuration
        try:
            self.server.start()
        except StoreError as e:
            self._give_up(f"the embedded artifact store (weed pid {dead_pid}) died ({reason}) and could not be "
                          f"restarted on {self.server.data_dir}: {e}")
            return False
        self.restarts += 1
        self.note(f"the embedded artifact store (weed pid {dead_pid}) died ({reason}); restarted it on "
                  f"{self.server.data_dir} (weed pid {self.server.pid}), same ports and data")
        return True

    def _give_up(self, message: str) -> None:
        self.lost = message + "; the run stopped (resume it with --resume once the store runs)"
        self.on_lost(self.lost)


class GuardedStore:
    """An ArtifactStore whose every method call goes through a StoreGuard; attributes pass through."""

    def __init__(self, store: Any, guard: StoreGuard) -> None:
        self._store, self._guard = store, guard

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._guard.call(value, *args, **kwargs)
