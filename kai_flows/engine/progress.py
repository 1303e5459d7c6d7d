"""Progress of a run: a rich Live table on a terminal, plain lines otherwise (CI logs), or nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from kai_flows.engine.records import Node

_STYLE = {"Succeeded": "green", "Failed": "red", "Error": "red", "Running": "cyan", "Pending": "dim",
          "Skipped": "yellow", "Omitted": "yellow"}


class Progress(Protocol):
    def update(self, nodes: Iterable[Node], phase: str) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


def _elapsed(node: Node) -> str:
    if not node.started_at:
        return ""
    start = datetime.strptime(node.started_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    end = datetime.strptime(node.finished_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) \
        if node.finished_at else datetime.now(UTC)
    wall = node.kai.get("wallSeconds")
    return f"{wall:.1f}s" if wall is not None and node.finished_at else f"{(end - start).total_seconds():.0f}s"


def _last_log_line(node: Node) -> str:
    log = node.kai.get("log")
    if not log:
        return ""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2048))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith(("=== ", "--- stdout ---"))]
    except OSError:
        return ""
    return lines[-1][:80] if lines else ""


class NoProgress:
    def update(self, nodes: Iterable[Node], phase: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """One line per phase change of a task node (CI-friendly)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.seen: dict[str, str] = {}

    def update(self, nodes: Iterable[Node], phase: str) -> None:
        for n in nodes:
            if n.type not in ("Pod", "Retry", "Skipped", "TaskGroup", "DAG") or self.seen.get(n.id) == n.phase:
                continue
            if "attempt" in n.kai:
                continue  # a retry attempt: its Retry node reports
            self.seen[n.id] = n.phase
            if n.phase == "Pending":
                continue
            extra = f" {_elapsed(n)}" if n.fulfilled else ""
            retries = f" retries={n.kai['retries']}" if n.kai.get("retries") else ""
            msg = f" - {n.message}" if n.message and n.phase != "Succeeded" else ""
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {n.display_name or n.name} {n.phase}{extra}{retries}{msg}", file=self.stream,
                  flush=True)

    def note(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """A rich Live table: task, phase, duration, retries, last log line."""

    def __init__(self, title: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()
        self.last = 0.0

    def update(self, nodes: Iterable[Node], phase: str) -> None:
        now = time.monotonic()
        if now - self.last < 0.25 and phase == "Running":
            return
        self.last = now
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"{self.title}  [{_STYLE.get(phase, 'white')}]{phase}[/]", expand=False)
        for col in ("task", "phase", "time", "retries", "last log line"):
            table.add_column(col, overflow="fold" if col == "last log line" else "ellipsis")
        for n in nodes:
            if n.type not in ("Pod", "Retry", "Skipped") or "attempt" in n.kai:
                continue
            style = _STYLE.get(n.phase, "white")
            # names and messages are data: `[name]` in them is text, not Rich markup
            table.add_row(Text(n.display_name), f"[{style}]{n.phase}[/]", _elapsed(n), str(n.kai.get("retries", "")),
                          Text(_last_log_line(n) if n.phase == "Running" else (n.message[:80] if n.phase != "Succeeded"
                                                                               else "")))
        self.live.update(table)

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self.live.stop()


def make_progress(enabled: bool, title: str) -> Progress:
    if not enabled:
        return NoProgress()
    if sys.stderr.isatty():
        return LiveProgress(title)
    return LineProgress()


def log_dir_for(out: Path) -> Path:
    return out / "logs"
