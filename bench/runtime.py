"""Process runtime vs container runtime on the same inputs, in the same run: wall time (median of N) and results.

    PYTHONPATH=. python bench/runtime.py [--reps 3] [--only image-quality|reconstruction]

- image-quality on ../shared/datasets/sceaux_castle/images;
- reconstruction on the synthetic sample (exact cameras and mesh): registered views and mesh F-score of each
  runtime, which must agree within 0.01.
Needs the step images (`make images`). The container runtime honours each step's CPU limit, as a pod does, so
steps with small limits (250m for the per-photo quality scores) run slower there than as unlimited host processes:
that difference is what a cluster would show too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kai_flows.engine.runner import run_pipeline
from kai_flows.evaluate import evaluate
from kai_steps.sample_scene import render_sample_scene

REPO = Path(__file__).resolve().parents[1]
SCEAUX = REPO.parent / "shared" / "datasets" / "sceaux_castle" / "images"


def _one(pipeline: str, images: Path, runtime: str, work: Path, i: int) -> tuple[float, object]:
    out = work / f"{pipeline}-{runtime}-{i}"
    started = time.monotonic()
    result = run_pipeline(REPO / "workflow_templates" / f"{pipeline}.yaml", inputs={"images": images}, out=out,
                          progress=False, cache=work / "cache", runtime=runtime)
    wall = time.monotonic() - started
    if result.phase != "Succeeded":
        raise SystemExit(f"{pipeline} ({runtime}) {result.phase}: {result.message}")
    return wall, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["image-quality", "reconstruction"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kai-bench-runtime-") as tmp:
        work = Path(tmp)
        sample = work / "sample"
        render_sample_scene(sample)
        cases = {"image-quality": SCEAUX, "reconstruction": sample / "images"}
        for pipeline, images in cases.items():
            if args.only and pipeline != args.only:
                continue
            walls: dict[str, list[float]] = {"process": [], "container": []}
            last: dict[str, object] = {}
            for i in range(args.reps):
                for runtime in ("process", "container"):  # interleaved: drift on the machine hits both alike
                    wall, last[runtime] = _one(pipeline, images, runtime, work, i)
                    walls[runtime].append(wall)
            p, c = statistics.median(walls["process"]), statistics.median(walls["container"])
            print(f"{pipeline}: process {p:.1f} s, container {c:.1f} s (median of {args.reps}) -> x{c / p:.2f}; "
                  f"runs: process {', '.join(f'{w:.1f}' for w in walls['process'])}; "
                  f"container {', '.join(f'{w:.1f}' for w in walls['container'])}")
            if pipeline == "reconstruction":
                for runtime, result in last.items():
                    acc = evaluate(result.outputs["cameras"], sample / "gt_cameras", result.outputs["mesh"],
                                   sample / "gt_mesh.ply", samples=50_000)
                    print(f"  {runtime:9s}: registered {acc.registered}/{acc.total}, "
                          f"F-score@1% {acc.fscore_1pct:.3f}, @0.5% {acc.fscore_05pct:.3f}")
            for runtime, result in last.items():
                per: dict[str, float] = {}
                for n in result.nodes.values():
                    if n.type == "Pod" and n.wall_seconds is not None:
                        per[n.template] = per.get(n.template, 0.0) + n.wall_seconds
                print(f"  {runtime:9s} step wall (sum over pods): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))


if __name__ == "__main__":
    main()
