"""Warm starts: a small server process that has already imported the step entry point and one step module, and
forks a fresh process per step on request. A step started this way is still its own process (own session and
process group, own cwd, stdout, stderr and environment, its own exit status and rusage), but skips the 1-2 s of
imports (numpy, OpenCV, torch, ...) a cold `python -m kai_flows.entrypoint` pays - in a cluster the image's
warm page cache hides part of that; on a laptop it dominates small steps.

Protocol (JSON lines): the engine writes requests `{"id", "args", "cwd", "env", "stdout", "log"}` on the server's
stdin; the server answers `{"ready": true}` once, then `{"id", "pid"}` when a step starts and
`{"id", "status", "utime", "stime", "maxrss"}` when it ends (`os.wait4` of that child). The server has no Python
threads (it forks, so it keeps to one select loop), and it dies with the engine (PR_SET_PDEATHSIG); its children
die with it the same way. Each child reports the modules it imported lazily, and the server imports them too,
so later forks of the same step skip that work as well.

    python -m kai_flows.engine.zygote kai_steps.quality
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import selectors
import signal
import sys
import traceback

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _send(fd: int, msg: dict) -> None:
    data = (json.dumps(msg) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _report_imports(learn_fd: int, before: set[str]) -> None:
    """Tell the server which modules this step imported lazily, in atomic (< PIPE_BUF) JSON lines."""
    names = sorted(n for n in set(sys.modules) - before if not n.startswith("__"))
    chunk: list[str] = []
    for name in [*names, None]:
        if name is None or len(json.dumps([*chunk, name])) > 3800:
            if chunk:
                try:
                    os.write(learn_fd, (json.dumps(chunk) + "\n").encode())
                except OSError:
                    return
            chunk = []
        if name is not None:
            chunk.append(name)


def _child(req: dict, keep_fds: tuple[int, ...], learn_fd: int) -> None:
    """In the forked child: become the step process, run the entry point, never return."""
    code = 1
    before = set(sys.modules)
    try:
        os.setsid()
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in set(keep_fds):
            try:
                os.close(fd)
            except OSError:
                pass
        os.chdir(req["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for src, dst in ((null, 0), (out, 1), (log, 2)):
            os.dup2(src, dst)
            os.close(src)
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = ["kai_flows.entrypoint", *req["args"]]
        from kai_flows.entrypoint import main

        main(req["args"])
        code = 0
    except SystemExit as e:
        if isinstance(e.code, int):
            code = e.code
        elif e.code is None:
            code = 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        _report_imports(learn_fd, before)
        os._exit(code)


def _load_lazy_placeholders() -> None:
    """Load the modules lazy_loader left as placeholders (importlib's _LazyModule, loaded on first attribute use).
    Importing a submodule under an unloaded one (`import torch._C` while `torch` is a placeholder) leaves the
    package half-initialised: the next use of torch fails or segfaults, and with it the server and the step it
    was about to report (every radiance-field run failed its first attempt that way)."""
    for name, module in list(sys.modules.items()):
        if type(module).__name__ == "_LazyModule":
            try:
                getattr(module, "__name__")  # noqa: B009 - any attribute access makes importlib load it
            except BaseException:  # a module that fails to load is skipped, as in _learn
                sys.modules.pop(name, None)


def _learn(line: bytes) -> None:
    """Import what a step imported lazily (numpy submodules, PIL plugins, scipy, ...), so the next fork starts
    warmer. Like multiprocessing's fork start method, this relies on those libraries being fork-safe (OpenBLAS
    and OpenMP pools register atfork handlers); `--cold` is the escape hatch."""
    try:
        names = json.loads(line)
    except ValueError:
        return
    _load_lazy_placeholders()
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # a module that only imports inside its step is simply skipped
            continue


def serve(module: str) -> None:
    out_fd = os.dup(1)  # the protocol channel; fd 1 itself is never written by this server
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    _die_with_parent()
    try:
        importlib.import_module("kai_flows.entrypoint")
        importlib.import_module(module)
    except BaseException as e:  # the engine falls back to cold starts, which report the error properly
        _send(out_fd, {"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    learn_r, learn_w = os.pipe()
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(r, selectors.EVENT_READ)
    sel.register(learn_r, selectors.EVENT_READ)
    _send(out_fd, {"ready": True, "pid": os.getpid()})
    ids: dict[int, str] = {}
    buf = b""
    learn_buf = b""
    stdin_open = True
    while stdin_open or ids:
        for key, _ in sel.select():
            if key.fd == 0:
                chunk = os.read(0, 65536)
                if not chunk:
                    stdin_open = False
                    sel.unregister(0)
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    try:
                        pid = os.fork()
                    except OSError:  # the engine then starts this step cold
                        _send(out_fd, {"id": req["id"], "pid": 0})
                        continue
                    if pid == 0:
                        _child(req, (out_fd, r, w, learn_r, getattr(sel, "fileno", lambda: r)()), learn_w)
                    ids[pid] = req["id"]
                    _send(out_fd, {"id": req["id"], "pid": pid})
            elif key.fd == learn_r:
                learn_buf += os.read(learn_r, 65536)
                while b"\n" in learn_buf:
                    line, learn_buf = learn_buf.split(b"\n", 1)
                    _learn(line)
            else:
                os.read(r, 4096)
        while ids:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            req_id = ids.pop(pid, None)
            if req_id is not None:
                _send(out_fd, {"id": req_id, "status": status, "utime": usage.ru_utime, "stime": usage.ru_stime,
                               "maxrss": usage.ru_maxrss})


if __name__ == "__main__":
    serve(sys.argv[1])
    # Nothing is left to flush (the protocol goes through os.write): skip the interpreter's teardown of numpy,
    # OpenCV, torch..., which takes longer than many steps and would delay the end of every run.
    os._exit(0)
