"""Run one step's process: its own session (so the whole process group can be killed), a deadline, and the
resource figures of that one child from `os.wait4` (wall time, CPU time, peak RSS) - no psutil polling.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE_S = 2.0  # SIGTERM first so Python steps can clean their staging folders, then SIGKILL


@functools.lru_cache(maxsize=1)
def _pdeathsig_prefix() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL --` when util-linux has it: the step then dies with the engine (a SIGKILLed
    engine must not leave steps running), at the price of one tiny exec. A Python `preexec_fn` doing the same
    prctl costs ~10 ms per step (fork instead of vfork), a third of the per-task budget."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        helptext = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if "--pdeathsig" in helptext else ()


@dataclass
class ProcessOutcome:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    wall_s: float
    cpu_s: float
    max_rss_bytes: int | None  # None: not measurable by this launcher (docker without a cgroup of ours)
    timed_out: bool = False
    stopped: bool = False  # killed because the run was stopped (SIGINT)
    oom_killed: bool = False  # killed by the kernel for exceeding its memory limit (container runtime)
    evicted: str = ""  # the kubelet's eviction message (an emptyDir over its sizeLimit), container runtime
    warm_start: bool = False


class ProcessGroups:
    """The process groups the engine started and has not reaped yet, so SIGINT can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pgids: set[int] = set()
        self._hooks: dict[str, Callable[[], None]] = {}  # other ways to stop a step (a container's `stop`)
        self.stopping = False

    def add_hook(self, key: str, stop: Callable[[], None]) -> None:
        with self._lock:
            self._hooks[key] = stop
        if self.stopping:
            stop()

    def remove_hook(self, key: str) -> None:
        with self._lock:
            self._hooks.pop(key, None)

    def add(self, pgid: int) -> None:
        with self._lock:
            self._pgids.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._pgids.discard(pgid)

    def stop_all(self) -> None:
        self.stopping = True
        with self._lock:
            pgids = list(self._pgids)
            hooks = list(self._hooks.values())
        for stop in hooks:
            threading.Thread(target=stop, daemon=True).start()
        for pgid in pgids:
            _signal_group(pgid, signal.SIGTERM)
        if pgids:
            threading.Timer(KILL_GRACE_S, lambda: [_signal_group(p, signal.SIGKILL) for p in pgids]).start()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def process_start_time(pid: int) -> str:
    """A process's start time (clock ticks since boot, /proc/<pid>/stat field 22), "" when it is gone: with the
    pid it tells a live process from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def run_process(argv: list[str], *, cwd: Path, env: dict[str, str], stdout_path: Path, log_path: Path,
                deadline_s: float | None, groups: ProcessGroups) -> ProcessOutcome:
    """Start `argv` in a new session, wait for it, kill its group at the deadline. Raises OSError if it cannot
    start (missing program), which the caller reports as an Error, not a Failed step."""
    if os.sep not in argv[0] and shutil.which(argv[0], path=env.get("PATH")) is None:
        raise FileNotFoundError(2, "not found on PATH", argv[0])  # an Error, not a step failure
    started = time.monotonic()
    with open(stdout_path, "wb") as out, open(log_path, "ab") as log:
        proc = subprocess.Popen([*_pdeathsig_prefix(), *argv], cwd=cwd, env=env, stdout=out, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    pgid = proc.pid
    groups.add(pgid)
    timed_out = threading.Event()
    timer: threading.Timer | None = None
    if deadline_s is not None:
        def expire() -> None:
            timed_out.set()
            _signal_group(pgid, signal.SIGTERM)
            threading.Timer(KILL_GRACE_S, _signal_group, (pgid, signal.SIGKILL)).start()
        timer = threading.Timer(deadline_s, expire)
        timer.daemon = True
        timer.start()
    if groups.stopping:
        _signal_group(pgid, signal.SIGTERM)
    try:
        while True:
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        if timer is not None:
            timer.cancel()
        proc.returncode = -1  # reaped by wait4 above; keep Popen from waiting again
    # The step is gone; anything it left in its group (background children) goes with it.
    _signal_group(pgid, signal.SIGKILL)
    groups.discard(pgid)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    return ProcessOutcome(
        exit_code=code if code >= 0 else None, signal=-code if code < 0 else None, wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime, max_rss_bytes=usage.ru_maxrss * 1024,
        timed_out=timed_out.is_set(), stopped=groups.stopping and not timed_out.is_set() and code != 0,
    )
