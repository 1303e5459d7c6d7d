"""The engine's side of warm starts (see zygote.py): one zygote per step module, started on first use.

A template is eligible when its command is exactly `python -m kai_flows.entrypoint` (what the compiler emits)
and its first argument names `module:function`. Everything else, and every module whose zygote fails to import,
is started cold by `process.run_process`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kai_flows.engine.process import KILL_GRACE_S, ProcessGroups, ProcessOutcome, _pdeathsig_prefix, _signal_group
from kai_flows.step import ENTRYPOINT_COMMAND

ENTRY = ENTRYPOINT_COMMAND


class ZygoteUnavailable(OSError):
    """The warm-start server did not start the step; the caller starts it cold instead."""


def warm_module(argv: list[str]) -> str | None:
    """The step module when `argv` runs the kai-flows entry point, else None."""
    if len(argv) < 4 or argv[0] not in ("python", "python3", sys.executable) or argv[1:3] != ["-m", ENTRY[2]]:
        return None
    module, sep, func = argv[3].partition(":")
    return module if sep and module and func and not module.startswith("-") else None


class _Pending:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.done = threading.Event()
        self.pid = 0
        self.result: dict[str, Any] = {}


class Zygote:
    def __init__(self, module: str, env: dict[str, str], cwd: Path) -> None:
        self.module = module
        self.proc = subprocess.Popen([*_pdeathsig_prefix(), sys.executable, "-m", "kai_flows.engine.zygote", module],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, cwd=cwd, start_new_session=True)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._ready_lock = threading.Lock()
        self._ok: bool | None = None  # unknown until its hello line is read
        self.error = ""

    @property
    def ok(self) -> bool:
        """Whether the server is up (waits for its imports on first use)."""
        with self._ready_lock:
            if self._ok is None:
                assert self.proc.stdout is not None
                hello = json.loads(self.proc.stdout.readline() or b'{"ready": false, "error": "no answer"}')
                self._ok = bool(hello.get("ready"))
                self.error = hello.get("error", "")
                if self._ok:
                    threading.Thread(target=self._read, name=f"zygote-{self.module}", daemon=True).start()
            return self._ok

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._lock:
                p = self._pending.get(msg["id"])
            if p is None:
                continue
            if "pid" in msg:
                p.pid = msg["pid"]
                p.started.set()
            else:
                p.result = msg
                p.done.set()
        self._ok = False
        with self._lock:  # the zygote died: wake every waiter
            for p in self._pending.values():
                p.started.set()
                p.done.set()

    def run(self, args: list[str], *, cwd: Path, env: dict[str, str], stdout_path: Path, log_path: Path,
            deadline_s: float | None, groups: ProcessGroups) -> ProcessOutcome:
        req_id = str(next(self._ids))
        p = _Pending()
        with self._lock:
            self._pending[req_id] = p
        started = time.monotonic()
        try:
            req = {"id": req_id, "args": args, "cwd": str(cwd), "env": env, "stdout": str(stdout_path),
                   "log": str(log_path)}
            assert self.proc.stdin is not None
            with self._lock:
                self.proc.stdin.write((json.dumps(req) + "\n").encode())
                self.proc.stdin.flush()
            p.started.wait()
            if not p.pid:
                raise ZygoteUnavailable(f"the warm-start server for {self.module} cannot fork")
            groups.add(p.pid)
            timed_out = threading.Event()
            timer = None
            if deadline_s is not None:
                def expire() -> None:
                    timed_out.set()
                    _signal_group(p.pid, signal.SIGTERM)
                    threading.Timer(KILL_GRACE_S, _signal_group, (p.pid, signal.SIGKILL)).start()
                timer = threading.Timer(deadline_s, expire)
                timer.daemon = True
                timer.start()
            if groups.stopping:
                _signal_group(p.pid, signal.SIGTERM)
            p.done.wait()
            if timer is not None:
                timer.cancel()
            _signal_group(p.pid, signal.SIGKILL)
            groups.discard(p.pid)
            if not p.result:
                raise OSError(f"the warm-start server for {self.module} died while step {args[0]} ran")
        finally:
            with self._lock:
                self._pending.pop(req_id, None)
        code = os.waitstatus_to_exitcode(p.result["status"])
        return ProcessOutcome(
            exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
            wall_s=time.monotonic() - started, cpu_s=p.result["utime"] + p.result["stime"],
            max_rss_bytes=p.result["maxrss"] * 1024, timed_out=timed_out.is_set(),
            stopped=groups.stopping and not timed_out.is_set() and code != 0)

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


ZygoteKey = tuple[str, tuple[tuple[str, str], ...]]  # (module, the template's fixed env, sorted)


class ZygotePool:
    """One zygote per step module and fixed template env, started lazily; `get` returns None when warm starts
    are off or failed. The env is part of the key because libraries read some variables once, at import
    (OMP_NUM_THREADS sizes OpenMP's pool): a zygote that imported under other values could not honour them."""

    def __init__(self, env: dict[str, str], cwd: Path, enabled: bool = True) -> None:
        self.env, self.cwd, self.enabled = env, cwd, enabled
        self._zygotes: dict[ZygoteKey, Zygote] = {}
        self._lock = threading.Lock()

    def _start(self, key: ZygoteKey) -> Zygote:
        return Zygote(key[0], {**self.env, **dict(key[1])}, self.cwd)

    def prestart(self, keys: set[ZygoteKey]) -> None:
        """Start the servers now, so their imports overlap the input upload instead of delaying a step."""
        if not self.enabled:
            return
        with self._lock:
            for key in sorted(keys - set(self._zygotes)):
                self._zygotes[key] = self._start(key)

    def get(self, key: ZygoteKey) -> Zygote | None:
        if not self.enabled:
            return None
        with self._lock:
            z = self._zygotes.get(key)
            if z is None:
                z = self._zygotes[key] = self._start(key)
        return z if z.ok else None

    def close(self) -> None:
        with self._lock:
            zygotes, self._zygotes = list(self._zygotes.values()), {}
        for z in zygotes:
            z.close()
