"""What a container used, read from the cgroup it ran under (podman's `--cgroup-parent`): peak memory and CPU time.

The parent cgroup outlives the container, so its counters can be read after the container has exited, and they
cover everything that ran in it (cgroup v1: memory.max_usage_in_bytes, cpuacct.usage; v2: memory.peak, cpu.stat).
"""

from __future__ import annotations

import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def figures(cgroup: str) -> tuple[int | None, float | None]:
    """Peak memory (bytes) and CPU time (s) of everything that ran under `cgroup`; None where unreadable."""
    rel = cgroup.lstrip("/")
    peak = cpu = None
    for path, kind in ((CGROUP_ROOT / "memory" / rel / "memory.max_usage_in_bytes", "peak"),
                       (CGROUP_ROOT / rel / "memory.peak", "peak"),
                       (CGROUP_ROOT / "cpuacct" / rel / "cpuacct.usage", "cpu_ns"),
                       (CGROUP_ROOT / rel / "cpu.stat", "cpu_stat")):
        try:
            text = path.read_text()
        except OSError:
            continue
        if kind == "peak" and peak is None:
            peak = int(text.strip())
        elif kind == "cpu_ns" and cpu is None:
            cpu = int(text.strip()) / 1e9
        elif kind == "cpu_stat" and cpu is None:
            usage = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
            cpu = int(usage.get("usage_usec", 0)) / 1e6
    return peak, cpu


def remove(cgroup: str) -> None:
    """Remove `cgroup` and what the engine created under it (deepest first), in every hierarchy."""
    rel = cgroup.lstrip("/")
    roots = [p for p in CGROUP_ROOT.iterdir() if p.is_dir()] if CGROUP_ROOT.is_dir() else []
    for root in [CGROUP_ROOT, *roots]:
        top = root / rel
        if not top.is_dir() or top.is_symlink():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_retry(d)
        _rmdir_retry(top)


def _rmdir_retry(d: Path) -> None:
    for _ in range(20):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # conmon may still be leaving it
