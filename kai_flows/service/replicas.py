"""`kai-flows coordinator --replicas N`: several coordinator replicas on one machine, one command.

What a Deployment does in a cluster, for a laptop or a test bed: N processes over the same ledger, API ports
`api_port + 2i`, metrics ports `metrics_port + 2i` (8080/8081, 8082/8083, ... by default), claimers
`<name>-<i>`, and a replica that dies is started again (with its own name, so it adopts its jobs at once). With
the local backend the replicas share one state folder and one embedded SeaweedFS that this supervisor starts, so
a job one replica started is followed by any other. Without a token one is made and written (0600) to
`<state>/api-token`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import typer

RESTART_DELAY_S = 1.0
CRASH_LOOP = (3, 10.0)  # a replica that exits this many times in a row, each within this many seconds: give up


@dataclass
class Replica:
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_exits: int = 0


def supervise(argv: list[str], replicas: int, *, api_port: int, metrics_port: int, claimer: str,
              env: dict[str, str], stop: threading.Event) -> int:
    """Run `replicas` copies of `kai-flows coordinator <argv>` until `stop`; restart any that dies."""
    procs = [Replica(i, [sys.executable, "-m", "kai_flows.cli", "coordinator", *argv,
                         "--api-port", str(api_port + 2 * i), "--metrics-port", str(metrics_port + 2 * i),
                         "--claimer", f"{claimer}-{i}"]) for i in range(replicas)]
    for r in procs:
        r.proc, r.started = subprocess.Popen(r.argv, env=env), time.monotonic()
        typer.echo(f"replica {r.index}: pid {r.proc.pid}, API http://127.0.0.1:{api_port + 2 * r.index}, metrics "
                   f"http://127.0.0.1:{metrics_port + 2 * r.index}/metrics", err=True)
    failed = 0
    while not failed and not stop.wait(0.5):
        for r in procs:
            if r.proc is not None and (code := r.proc.poll()) is not None:
                r.quick_exits = r.quick_exits + 1 if time.monotonic() - r.started < CRASH_LOOP[1] else 1
                if r.quick_exits >= CRASH_LOOP[0]:
                    typer.secho(f"error: replica {r.index} exited {r.quick_exits} times in a row within "
                                f"{CRASH_LOOP[1]:.0f}s of starting (last exit {code}); stopping all (see its "
                                "message above)", fg=typer.colors.RED, err=True)
                    failed = 1
                    break
                typer.echo(f"replica {r.index} exited ({code}); starting it again", err=True)
                time.sleep(RESTART_DELAY_S)
                r.proc, r.started = subprocess.Popen(r.argv, env=env), time.monotonic()
    for r in procs:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    codes = [r.proc.wait() if r.proc else 0 for r in procs]
    return failed or max(codes)


def local_token(state_dir: Path) -> str:
    from kai_flows.service.auth import new_token

    path = state_dir / "api-token"
    if path.is_file():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
