"""Tiny steps used by the foundation tests (real steps, run through the real entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from kai_flows.step import In, OptionalIn, Out, step


class Counted(BaseModel):
    lines: int
    label: str
    words: list[str]


@step(image="quality", cpu="100m", memory="64Mi", timeout="1m")
def count_lines(text: In[Path], summary: Out[Path], label: str = "x", scale: float = 1.0,
                mode: Literal["fast", "slow"] = "fast") -> Counted:
    content = text.read_text().split("\n")
    print("counting", text)  # goes to stderr: stdout carries the result
    summary.mkdir()
    (summary / "count.txt").write_text(str(len(content)))
    return Counted(lines=int(len(content) * scale), label=label, words=content[:2])


@step(image="quality", timeout="1m")
def needs_list(numbers: list[int], extra: OptionalIn[Path] = None) -> Counted:
    return Counted(lines=sum(numbers), label="sum" if extra is None else "with-extra", words=[])


@step(image="quality", timeout="1m")
def crashes(out: Out[Path]) -> None:
    out.mkdir()
    (out / "half.txt").write_text("partial")
    raise ValueError("the photos are upside down")


@step(image="quality", timeout="1m")
def forgets_output(out: Out[Path]) -> None:
    return None


@step(image="quality", gpu=1, pool="gpu-optimized", timeout="1m")
def on_gpu(label: str) -> Counted:
    return Counted(lines=0, label=label, words=[])


@step(image="quality", timeout="1m")
def reads_status(workflow_status: str = "Succeeded", failures: str = "[]") -> None:
    return None


class Planned(BaseModel):
    memory: str


@step(image="quality", timeout="1m")
def plan_memory(photos: int) -> Planned:
    return Planned(memory=f"{64 + photos}Mi")


@step(image="quality", memory="64Mi", memory_max="1Gi", timeout="1m")
def sized_work(label: str = "x") -> Counted:
    return Counted(lines=0, label=label, words=[])
