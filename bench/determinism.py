"""Benchmark: what reproducible output costs. The two steps that `deterministic` (on by default) runs on one thread,
camera_poses (incremental mapping) and mesh (Poisson), timed against their threaded runs on the same inputs.

    PYTHONPATH=. python bench/determinism.py [--sets fountain_p11] [--tier standard] [--runs 3] [--threads 2]

Each set is preprocessed and densified once; then camera_poses and mesh run ``--runs`` times each way, alternating
deterministic and threaded so that a machine other jobs share slows both alike. Printed per step: median wall
seconds each way, their ratio, and how many distinct outputs the runs gave (1 = byte-identical every time). The
last line per set puts the difference against the wall time of the steps from preprocess to finalize (threaded).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kai_steps.camera_poses import camera_poses
from kai_steps.convert import convert
from kai_steps.finalize import finalize
from kai_steps.mesh import mesh
from kai_steps.plan import PLANS
from kai_steps.point_cloud import point_cloud
from kai_steps.preprocess import preprocess

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def digest(folder: Path) -> str:
    """One sha256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # camera_poses logs its stage timings there
        fn(*args, **kwargs)
    return time.perf_counter() - t


def compare(label: str, runs: int, step: Callable[[Path, bool], None], work: Path) -> tuple[float, float]:
    """Run ``step(out, deterministic)`` alternately both ways; print the row; return the two medians."""
    walls: dict[bool, list[float]] = {True: [], False: []}
    outs: dict[bool, set[str]] = {True: set(), False: set()}
    for k in range(runs):
        for det in (k % 2 == 0, k % 2 != 0):  # alternate which goes first
            out = work / f"{label}-{'det' if det else 'thr'}-{k}"
            walls[det].append(timed(step, out, det))
            outs[det].add(digest(out))
    det, thr = statistics.median(walls[True]), statistics.median(walls[False])
    print(
        f"  {label:14s} {thr:9.1f} {det:9.1f} {det / thr:7.2f}x {len(outs[False]):>3}/{runs:<3} "
        f"{len(outs[True]):>3}/{runs:<3}",
        flush=True,
    )
    return det, thr


def bench_set(name: str, tier: str, runs: int, threads: int, work: Path) -> None:
    plan = PLANS[tier]
    images = DATASETS / name / "images"
    print(f"{name} ({tier} tier, {threads} threads, {runs} runs each way)")
    print(f"  {'step':14s} {'thread s':>9} {'determ s':>9} {'ratio':>8} {'distinct thr':>12} {'det':>7}")
    pre = work / "pre"
    t_pre = timed(preprocess, images, pre, max_image_size=plan["max_image_size"])
    size = int(plan["max_image_size"])

    def poses(out: Path, det: bool) -> None:
        camera_poses(pre, out, max_image_size=size, num_threads=threads, deterministic=det)

    d_cp, t_cp = compare("camera_poses", runs, poses, work)
    dense = work / "dense"
    t_pc = timed(
        point_cloud,
        pre,
        work / "camera_poses-det-0",
        dense,
        max_image_size=plan["dense_image_size"],
        density=plan["density"],
    )

    def surface(out: Path, det: bool) -> None:
        mesh(dense, out, face_budget=int(plan["face_budget"]), deterministic=det)

    d_me, t_me = compare("mesh", runs, surface, work)
    t_conv = timed(convert, work / "mesh-thr-0", work / "models")
    t_fin = timed(finalize, work / "models", work / "report")
    threaded = t_pre + t_cp + t_pc + t_me + t_conv + t_fin
    extra = d_cp + d_me - t_cp - t_me
    print(
        f"  steps preprocess..finalize {threaded:.1f} s threaded; deterministic adds {extra:+.1f} s "
        f"({(threaded + extra) / threaded:.2f}x)\n",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["fountain_p11"])
    ap.add_argument("--tier", choices=sorted(PLANS), default="standard")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import open3d as o3d
    import pycolmap

    pycolmap.logging.minloglevel = 2  # warnings and up: keep the table readable
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    for name in args.sets:
        if not (DATASETS / name / "images").is_dir():
            print(f"{name}: not found under {DATASETS}; skipped")
            continue
        with tempfile.TemporaryDirectory(prefix="kai-bench-det-") as tmp:
            bench_set(name, args.tier, args.runs, args.threads, Path(tmp))


if __name__ == "__main__":
    main()
