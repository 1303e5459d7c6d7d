"""Benchmark: the `reconstruction` pipeline (and `radiance-field`, side by side), end to end through the local
engine, on the synthetic scene and the photo sets of ../shared/datasets, with plain pycolmap beside them in the
same run.

    PYTHONPATH=. python bench/reconstruction.py [--sets synthetic,fountain_p11,herz_jesus_p8,sceaux_castle]
                                                [--tier standard] [--skip-plain]
                                                [--pipelines reconstruction,radiance-field]

With several pipelines there is a column per set and pipeline; the radiance field's column adds its held-out
PSNR and SSIM against the constant-colour baseline, and its mesh's F-score stands beside the dense path's.

One table, a column per set: per-step wall seconds (the quality fan-out is its elapsed span: list-images, every
assess-image, quality-gate); registered images; mean reprojection error (px); camera position error mean/max (mm,
after Sim(3) alignment) and mean rotation error (deg) where ground truth exists; mesh F-score at tau = 1% and 0.5% of
the ground-truth mesh's bbox diagonal and the Chamfer distance (synthetic only); each step's peak memory against the
memory limit its template declares ("!" marks one over); and plain pycolmap with the same max_image_size, threads and
seed (bench/camera_poses.py), with the wall and CPU ratio of our camera-poses step to it. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pycolmap
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.camera_poses import plain_pycolmap, timed
from kai_flows.engine.model import EngineError
from kai_flows.engine.runner import NodeResult, RunResult, run_pipeline
from kai_flows.evaluate import evaluate
from kai_steps._colmap import find_model
from kai_steps._imageio import IMAGE_SUFFIXES
from kai_steps._metrics import pose_errors, read_strecha_dir
from kai_steps.plan import plan_reconstruction
from kai_steps.sample_scene import render_sample_scene

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "workflow_templates"
PIPELINES = ["reconstruction", "radiance-field"]
DATASETS = ROOT.parent / "shared" / "datasets"
ALL_SETS = ["synthetic", "fountain_p11", "herz_jesus_p8", "sceaux_castle"]
FANOUT = ("list-images", "assess-image", "quality-gate")
STEPS = ["preprocess", "camera-poses", "point-cloud", "mesh", "radiance-field", "field-mesh", "texture", "convert",
         "finalize"]
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_quantity(q: str) -> int:
    for suffix in sorted(UNITS, key=len, reverse=True):
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * UNITS[suffix])
    return int(float(q))


def memory_limits(template: Path) -> dict[str, int]:
    """Template name -> declared memory limit in bytes, read from the compiled WorkflowTemplate."""
    doc = yaml.safe_load(template.read_text())
    limits = {}
    for t in doc["spec"]["templates"]:
        mem = ((t.get("container") or t.get("script") or {}).get("resources", {}).get("limits", {}) or {}).get("memory")
        if mem:
            limits[t["name"]] = parse_quantity(str(mem))
    return limits


def _ts(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")) if iso else None


def fanout_span(nodes: list[NodeResult]) -> float | None:
    starts = [t for n in nodes if (t := _ts(n.started_at))]
    ends = [t for n in nodes if (t := _ts(n.finished_at))]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None


@dataclass
class Task:
    """One task of the DAG, its retry attempts (pods `task(0)`, `task(1)`, ...) folded together."""
    name: str
    template: str
    attempts: list[NodeResult]

    @property
    def wall_seconds(self) -> float | None:
        walls = [a.wall_seconds for a in self.attempts if a.wall_seconds is not None]
        return sum(walls) if walls else None

    @property
    def cpu_seconds(self) -> float | None:
        cpus = [a.cpu_seconds for a in self.attempts if a.cpu_seconds is not None]
        return sum(cpus) if cpus else None

    @property
    def peak_memory_bytes(self) -> int | None:
        peaks = [a.peak_memory_bytes for a in self.attempts if a.peak_memory_bytes is not None]
        return max(peaks) if peaks else None

    @property
    def over_memory_limit(self) -> bool:
        return any(a.over_memory_limit for a in self.attempts)

    def memory_limit(self, declared: dict[str, int]) -> int | None:
        """The limit the pod ran under: a sized step's planned figure (its podSpecPatch), else the template's
        declared one (``memory_limits``)."""
        return max((a.memory_limit_bytes for a in self.attempts if a.memory_limit_bytes), default=None) or \
            declared.get(self.template)


def tasks(result: RunResult) -> list[Task]:
    """The pods of the main DAG grouped by task; the exit handler's finalize only runs when the DAG failed."""
    grouped: dict[str, Task] = {}
    for n in result.nodes.values():
        if n.type != "Pod" or ".onExit" in n.name:
            continue
        name = re.sub(r"\(\d+\)$", "", n.display_name)
        grouped.setdefault(name, Task(name, n.template, [])).attempts.append(n)
    return list(grouped.values())


def f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.0f}"


def sfm_rows(who: str, rec: pycolmap.Reconstruction, total: int, gt: dict | None) -> dict[str, str]:
    """Registration and reprojection of a model and, with ground truth, its camera errors after Sim(3)."""
    rows = {f"{who}: registered": f"{rec.num_reg_images()}/{total}",
            f"{who}: reproj px": f"{rec.compute_mean_reprojection_error():.3f}"}
    if gt:
        e = pose_errors(rec, gt)
        rows[f"{who}: pos mean/max mm"] = f"{e.position_mean * 1e3:.2f}/{e.position_max * 1e3:.2f}"
        rows[f"{who}: rot mean deg"] = f"{e.rotation_mean_deg:.3f}"
    return rows


def bench_set(name: str, tmp: Path, tier: str, skip_plain: bool, limits: dict[str, int],
              pipeline: str = "reconstruction") -> dict[str, str]:
    """One column of the table (row label -> cell) plus notes under the key '_notes'."""
    col: dict[str, str] = {}
    notes: list[str] = []
    if name == "synthetic":
        if not (tmp / "synthetic").is_dir():  # one rendering for every pipeline
            render_sample_scene(tmp / "synthetic")
        image_dir, gt_dir, gt_mesh = tmp / "synthetic" / "images", tmp / "synthetic" / "gt_cameras", \
            tmp / "synthetic" / "gt_mesh.ply"
    else:
        image_dir, gt_dir, gt_mesh = DATASETS / name / "images", DATASETS / name / "gt_dense_cameras", None
    gt = read_strecha_dir(gt_dir) if gt_dir.is_dir() else None

    plan = plan_reconstruction(tier)
    if not skip_plain:
        try:
            work = tmp / f"plain-{name}"
            work.mkdir()
            (plain, total), w_plain, c_plain = timed(plain_pycolmap, image_dir, work, plan.max_image_size, 2, 0)
            col["plain: wall s (cpu s)"] = f"{w_plain:.1f} ({c_plain:.1f})"
            col |= sfm_rows("plain", plain, total, gt)
        except Exception as e:  # report, keep benchmarking the pipeline
            notes.append(f"{name}: plain pycolmap failed: {type(e).__name__}: {e}")
            w_plain = c_plain = None
    else:
        w_plain = c_plain = None

    try:
        result = run_pipeline(TEMPLATES / f"{pipeline}.yaml", parameters={"quality_tier": tier},
                              inputs={"images": image_dir}, out=tmp / f"out-{name}-{pipeline}", progress=False,
                              store_dir=tmp / "store", cache=tmp / "cache")
    except EngineError as e:
        notes.append(f"{name}: run not started: {e}")
        col["run phase"] = "NOT STARTED"
        col["_notes"] = notes  # type: ignore[assignment]
        return col
    col["run phase"] = result.phase
    if not result.succeeded:
        notes.append(f"{name}: run {result.phase}: {result.message}")
        for n in result.nodes.values():
            if n.type == "Pod" and n.phase not in ("Succeeded", "Skipped", "Omitted"):
                notes.append(f"{name}: step {n.display_name} {n.phase}: {n.message}")

    pods = tasks(result)
    fan = [t for t in pods if t.name.split("(")[0] in FANOUT]
    col["wall s: quality fan-out"] = f(fanout_span([a for t in fan for a in t.attempts]))
    by_name = {t.name: t for t in pods}
    for s in STEPS:
        n = by_name.get(s)
        col[f"wall s: {s}"] = f(n.wall_seconds) if n else "-"
    col["wall s: sum of steps"] = f(sum(n.wall_seconds or 0 for n in pods))

    # Peak memory of each step vs its declared limit; the fan-out's worst item stands for the fan-out.
    over = []
    groups = [("quality fan-out", fan)] + [(s, [by_name[s]] if s in by_name else []) for s in STEPS]
    for label, members in groups:
        measured = [n for n in members if n.peak_memory_bytes is not None]
        if not measured:
            col[f"peak MiB/limit: {label}"] = "-"
            continue
        worst = max(measured, key=lambda n: n.peak_memory_bytes / (n.memory_limit(limits) or float("inf")))
        limit = worst.memory_limit(limits)
        flag = worst.over_memory_limit or (limit is not None and worst.peak_memory_bytes > limit)
        col[f"peak MiB/limit: {label}"] = f"{mib(worst.peak_memory_bytes)}/{mib(limit)}" + (" !" if flag else "")
        over += [f"{name}: {n.name} peak {mib(n.peak_memory_bytes)} MiB over its limit "
                 f"{mib(n.memory_limit(limits))} MiB" for n in measured
                 if n.over_memory_limit or (n.memory_limit(limits) and n.peak_memory_bytes > n.memory_limit(limits))]
    notes += over

    cameras = result.outputs.get("cameras")
    if cameras:
        try:
            rec = pycolmap.Reconstruction(str(find_model(cameras)))
            total = len([p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES])
            col |= sfm_rows("ours", rec, total, gt)
        except Exception as e:
            notes.append(f"{name}: reading/evaluating the cameras failed: {type(e).__name__}: {e}")
    cp = by_name.get("camera-poses")
    if cp and cp.wall_seconds and w_plain:
        col["camera-poses / plain: wall"] = f"{cp.wall_seconds / w_plain:.2f}x"
        if cp.cpu_seconds and c_plain:
            col["camera-poses / plain: cpu"] = f"{cp.cpu_seconds / c_plain:.2f}x"

    field = by_name.get("radiance-field")
    if field and field.attempts and field.attempts[-1].outputs.get("result"):
        fs = json.loads(field.attempts[-1].outputs["result"])
        col["field held-out PSNR (baseline) dB"] = f"{fs['psnr']:.2f} ({fs['baseline_psnr']:.2f})"
        col["field held-out SSIM"] = f(fs.get("ssim"), "{:.3f}")

    mesh_dir = result.outputs.get("mesh")
    if gt_mesh and cameras and mesh_dir:
        try:
            acc = evaluate(cameras, gt_dir, mesh_dir, gt_mesh)
            col["mesh F-score tau=1% / 0.5%"] = f"{acc.fscore_1pct:.3f} / {acc.fscore_05pct:.3f}"
            col["mesh Chamfer (% of diag)"] = f"{acc.chamfer:.4f} ({100 * acc.chamfer / acc.diagonal:.2f}%)"
        except Exception as e:
            notes.append(f"{name}: mesh evaluation failed: {type(e).__name__}: {e}")
    col["_notes"] = notes  # type: ignore[assignment]
    return col


ROWS = (["run phase", "wall s: quality fan-out"] + [f"wall s: {s}" for s in STEPS] + ["wall s: sum of steps",
        "ours: registered", "ours: reproj px", "ours: pos mean/max mm", "ours: rot mean deg",
        "mesh F-score tau=1% / 0.5%", "mesh Chamfer (% of diag)", "field held-out PSNR (baseline) dB",
        "field held-out SSIM"]
        + [f"peak MiB/limit: {s}" for s in ["quality fan-out", *STEPS]]
        + ["plain: wall s (cpu s)", "plain: registered", "plain: reproj px", "plain: pos mean/max mm",
           "plain: rot mean deg", "camera-poses / plain: wall", "camera-poses / plain: cpu"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(ALL_SETS), help="comma-separated: " + ", ".join(ALL_SETS))
    ap.add_argument("--tier", default="standard", choices=["draft", "standard", "high"])
    ap.add_argument("--skip-plain", action="store_true", help="do not run plain pycolmap side by side")
    ap.add_argument("--pipelines", default="reconstruction", help="comma-separated: " + ", ".join(PIPELINES))
    args = ap.parse_args()
    pycolmap.logging.minloglevel = 2
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = sorted(set(pipelines) - set(PIPELINES))
    if unknown:
        ap.error(f"unknown pipeline(s) {', '.join(unknown)}; choose from {', '.join(PIPELINES)}")
    limits = {k: v for p in pipelines for k, v in memory_limits(TEMPLATES / f"{p}.yaml").items()}
    columns: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kai-bench-recon-") as tmp:
        tmp = Path(tmp)
        for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
            if name != "synthetic" and not (DATASETS / name / "images").is_dir():
                print(f"{name}: skipped ({DATASETS / name} is absent)", flush=True)
                continue
            for k, pipeline in enumerate(pipelines):
                label = name if len(pipelines) == 1 else f"{name} {pipeline}"
                print(f"{label}: running ...", flush=True)
                try:  # plain pycolmap once per set
                    col = bench_set(name, tmp, args.tier, args.skip_plain or k > 0, limits, pipeline)
                except Exception as e:  # one broken set must not hide the others
                    traceback.print_exc()
                    col = {"run phase": "BENCH ERROR", "_notes": [f"{label}: {type(e).__name__}: {e}"]}  # type: ignore
                notes += col.pop("_notes", [])  # type: ignore[arg-type]
                columns[label] = col
                print(f"{label}: done, {json.dumps(col)}", file=sys.stderr, flush=True)  # partial results survive
    if not columns:
        return
    names = list(columns)
    widths = [max(len(n), *(len(columns[n].get(r, "-")) for r in ROWS)) for n in names]
    print(f"\n{', '.join(pipelines)} benchmark, tier {args.tier}; wall/cpu in s, memory in MiB, "
          "'!' = over the declared limit")
    print(f"{'':30s} " + " ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)))
    for r in ROWS:
        print(f"{r:30s} " + " ".join(f"{columns[n].get(r, '-'):>{w}}" for n, w in zip(names, widths, strict=True)))
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
