"""Tiny steps for the warm-start tests (run through `python -m kai_flows.entrypoint tests.engine._steps:...`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel

from kai_flows.step import Out, step


class Said(BaseModel):
    text: str
    pid: int
    cwd: str
    cuda: str


@step(image="test")
def say(text: str, out: Out[Path]) -> Said:
    out.write_text(text)
    return Said(text=text, pid=os.getpid(), cwd=os.getcwd(), cuda=os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))


@step(image="test")
def nap(seconds: float) -> None:
    time.sleep(seconds)


@step(image="test")
def refuse(reason: str) -> None:
    raise ValueError(reason)
