"""Helpers shared by the ledger tests (a uniquely named module: every test folder has its own conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner, Result

from kai_flows.cli.ledger import register
from tests.conftest import REPO


def python(*args: str, **kwargs) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    """Start `python args...` with the repository and this folder (fake_runner, for `--backend`) importable."""
    path = os.pathsep.join([str(REPO), str(Path(__file__).resolve().parent)])
    env = {**os.environ, "PYTHONPATH": path, **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, text=True, **kwargs)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the ledger commands in-process, as `kai-flows` would after `register(app)`."""
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, list(args), env=env)
