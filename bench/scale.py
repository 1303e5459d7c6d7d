"""Benchmark: what a job of N photos costs, for N along a realistic capture path, through the local engine.

    PYTHONPATH=. python bench/scale.py [--views 30,100,200] [--steps camera-poses] [--tier standard]
                                       [--plain-max-views 200] [--with-k]

For each N the sample scene renders a hand-held capture (``render_sample_scene(path="capture")``: two orbit
heights plus close-ups, drifting exposure, some motion blur; no K.txt unless ``--with-k``: a phone capture has no
exact intrinsics), and the `reconstruction` template runs through the engine up to ``--steps`` (its tasks after
that step are cut from the DAG). Per step: wall and CPU seconds, peak RSS against the memory limit its pod ran
under (a sized step's planned figure, else the template's declared ``memory=``). Then the camera error against the
exact cameras (mean/max mm after Sim(3), rotation deg) and, when the mesh ran, its F-score against the exact
mesh. Plain pycolmap (default options: exhaustive matching, incremental mapping) runs on the same images in a
child process, so its CPU time and peak RSS are its own; the machine is shared, so compare ratios within one run.
Last, each step's growth exponent: the slope of log(time) on log(N) by least squares, over all N and over
N >= 100, for wall and CPU time.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reconstruction import FANOUT, STEPS, Task, fanout_span, memory_limits, tasks

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "workflow_templates" / "reconstruction.yaml"
ORDER = ["quality", "plan-reconstruction", *STEPS]  # "quality" is the fan-out: list-images, assess-image, gate


def trimmed_template(template: Path, last: str) -> dict:
    """The compiled template with every DAG task after ``last`` removed (the exit handler stays)."""
    if last not in STEPS:
        raise SystemExit(f"--steps {last!r}: expected one of {', '.join(STEPS)}")
    doc = yaml.safe_load(template.read_text())
    if last == STEPS[-1]:
        return doc
    doc = copy.deepcopy(doc)
    drop = set(STEPS[STEPS.index(last) + 1:])
    main = next(t for t in doc["spec"]["templates"] if t["name"] == doc["spec"]["entrypoint"])
    main["dag"]["tasks"] = [t for t in main["dag"]["tasks"] if t["name"] not in drop]
    ann = doc["metadata"]["annotations"]
    outputs = json.loads(ann["kai-flows.io/outputs"])
    ann["kai-flows.io/outputs"] = json.dumps({k: v for k, v in outputs.items() if v.split(".")[0] not in drop})
    return doc


def step_rows(result, limits: dict[str, int]) -> dict[str, dict]:
    """Per step of ORDER: wall, cpu, peak RSS and its declared limit (the fan-out: span, summed cpu, worst peak)."""
    pods = tasks(result)
    rows: dict[str, dict] = {}
    fan = [t for t in pods if t.name.split("(")[0] in FANOUT]
    groups: list[tuple[str, list[Task]]] = [("quality", fan)] + [
        (s, [t for t in pods if t.name == s]) for s in ORDER[1:]]
    for label, members in groups:
        if not members:
            continue
        walls = [t.wall_seconds for t in members if t.wall_seconds is not None]
        cpus = [t.cpu_seconds for t in members if t.cpu_seconds is not None]
        peaks = [(t.peak_memory_bytes, t.memory_limit(limits)) for t in members if t.peak_memory_bytes is not None]
        worst = max(peaks, key=lambda p: p[0] / (p[1] or float("inf")), default=(None, None))
        wall = fanout_span([a for t in members for a in t.attempts]) if label == "quality" else sum(walls or [0])
        rows[label] = {"wall": wall if walls else None, "cpu": sum(cpus) if cpus else None,
                       "peak": worst[0], "limit": worst[1]}
    return rows


def plain_worker(image_dir: str, work: str, max_image_size: str, gt_dir: str) -> None:
    """Child process: plain pycolmap on the images, one JSON line with its own wall, CPU and peak RSS."""
    import pycolmap

    from bench.camera_poses import plain_pycolmap
    from kai_steps._metrics import pose_errors, read_strecha_dir

    pycolmap.logging.minloglevel = 2
    w, c = time.perf_counter(), time.process_time()
    rec, total = plain_pycolmap(Path(image_dir), Path(work), int(max_image_size), 2, 0)
    out = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c, "registered": rec.num_reg_images(),
           "total": total, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    e = pose_errors(rec, read_strecha_dir(Path(gt_dir)))
    out |= {"pos_mean": e.position_mean, "pos_max": e.position_max, "rot_mean": e.rotation_mean_deg}
    print(json.dumps(out))


def run_plain(image_dir: Path, work: Path, max_image_size: int, gt_dir: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--plain-worker", str(image_dir), str(work),
                           str(max_image_size), str(gt_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def exponent(ns: list[int], ts: list[float]) -> float | None:
    """Slope of log t on log N (least squares); None with fewer than two points."""
    pts = [(n, t) for n, t in zip(ns, ts, strict=True) if t and t > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def bench_n(n: int, tmp: Path, args, limits: dict[str, int], template: dict) -> dict:
    from kai_flows.engine.runner import run_pipeline
    from kai_flows.evaluate import evaluate
    from kai_steps._colmap import find_model
    from kai_steps._metrics import pose_errors, read_strecha_dir
    from kai_steps.plan import plan_reconstruction
    from kai_steps.sample_scene import render_sample_scene

    scene = tmp / f"scene-{n}"
    t = time.perf_counter()
    render_sample_scene(scene, views=n, width=args.width, height=args.height, path="capture")
    if not args.with_k:
        (scene / "images" / "K.txt").unlink()
    res: dict = {"render_s": time.perf_counter() - t}
    result = run_pipeline(template, parameters={"quality_tier": args.tier}, inputs={"images": scene / "images"},
                          out=tmp / f"out-{n}", progress=False, store_dir=tmp / f"store-{n}", cache=tmp / "cache")
    res["phase"] = result.phase if result.succeeded else f"{result.phase}: {result.message}"
    if result.outputs.get("rejection"):
        res["phase"] += ", rejected by the quality gate"
    res["steps"] = step_rows(result, limits)
    gt = read_strecha_dir(scene / "gt_cameras")
    cameras = result.outputs.get("cameras")
    if cameras and Path(cameras).is_dir():
        import pycolmap

        rec = pycolmap.Reconstruction(str(find_model(cameras)))
        e = pose_errors(rec, gt)
        summary = json.loads((Path(cameras) / "summary.json").read_text())
        res["ours"] = {"registered": rec.num_reg_images(), "total": n, "pos_mean": e.position_mean,
                       "pos_max": e.position_max, "rot_mean": e.rotation_mean_deg,
                       "pairing": summary.get("pairing", summary.get("matcher_used")),
                       "pairs": summary.get("pairs_matched"), "mapper": summary.get("mapper")}
        mesh = result.outputs.get("mesh")
        if mesh and Path(mesh).is_dir():
            acc = evaluate(cameras, scene / "gt_cameras", mesh, scene / "gt_mesh.ply", samples=50_000)
            res["mesh"] = {"f1": acc.fscore_1pct, "f05": acc.fscore_05pct}
    if not args.skip_plain and n <= args.plain_max_views:
        res["plain"] = run_plain(scene / "images", tmp / f"plain-{n}",
                                 plan_reconstruction(args.tier).max_image_size, scene / "gt_cameras")
    return res


def fmt(v, spec: str = "{:.1f}") -> str:
    return "-" if v is None else spec.format(v)


def report(results: dict[int, dict], last: str) -> str:
    ns = sorted(results)
    steps = ORDER[: ORDER.index(last) + 1]
    lines = [f"{'N':>4} {'step':20s} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'limit MiB':>9}"]
    for n in ns:
        r = results[n]
        lines.append(f"{n:>4} {'(render)':20s} {r['render_s']:8.1f}   phase: {r['phase']}")
        for s in steps:
            row = r["steps"].get(s)
            if not row:
                continue
            over = " !" if row["peak"] and row["limit"] and row["peak"] > row["limit"] else ""
            lines.append(f"{n:>4} {s:20s} {fmt(row['wall']):>8} {fmt(row['cpu']):>8} "
                         f"{fmt(row['peak'] and row['peak'] / 2**20, '{:.0f}'):>9} "
                         f"{fmt(row['limit'] and row['limit'] / 2**20, '{:.0f}'):>9}{over}")
        o, p = r.get("ours"), r.get("plain")
        if o:
            lines.append(f"{n:>4} ours : reg {o['registered']}/{o['total']}, pos mean/max {o['pos_mean'] * 1e3:.2f}/"
                         f"{o['pos_max'] * 1e3:.2f} mm, rot {o['rot_mean']:.3f} deg, pairing {o['pairing']} "
                         f"({o['pairs']} pairs), mapper {o['mapper']}"
                         + (f", mesh F@1% {r['mesh']['f1']:.3f} F@0.5% {r['mesh']['f05']:.3f}" if "mesh" in r else ""))
        if p and "error" not in p:
            cp = r["steps"].get("camera-poses") or {}
            ratio = (f", camera-poses/plain wall {cp['wall'] / p['wall']:.2f}x cpu {cp['cpu'] / p['cpu']:.2f}x"
                     if cp.get("wall") and cp.get("cpu") else "")
            lines.append(f"{n:>4} plain: reg {p['registered']}/{p['total']}, pos mean/max {p['pos_mean'] * 1e3:.2f}/"
                         f"{p['pos_max'] * 1e3:.2f} mm, rot {p['rot_mean']:.3f} deg, wall {p['wall']:.1f} s, "
                         f"cpu {p['cpu']:.1f} s, peak {p['peak'] / 2**20:.0f} MiB{ratio}")
        elif p:
            lines.append(f"{n:>4} plain: failed: {p['error']}")
    # CPU time is the fairer series on a shared machine: wall time also counts waiting for the cores.
    lines.append("growth exponent in N (slope of log t on log N): wall all N / N >= 100, cpu all N / N >= 100")
    for s in [*steps, "plain pycolmap"]:
        cells = []
        for key in ("wall", "cpu"):
            ts = [(results[n].get("plain") or {}).get(key) if s == "plain pycolmap"
                  else results[n]["steps"].get(s, {}).get(key) for n in ns]
            big = [(n, t) for n, t in zip(ns, ts, strict=True) if n >= 100]
            cells += [exponent(ns, ts), exponent([b[0] for b in big], [b[1] for b in big]) if big else None]
        lines.append(f"  {s:20s} " + "  ".join(f"{fmt(c, '{:.2f}'):>6}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--plain-worker":
        plain_worker(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", default="30,100,200", help="comma-separated N")
    ap.add_argument("--steps", default=STEPS[-1], help=f"run the pipeline up to this step ({', '.join(STEPS)})")
    ap.add_argument("--tier", default="standard", choices=["draft", "standard", "high"])
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--with-k", action="store_true", help="keep the exact K.txt beside the photos")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--plain-max-views", type=int, default=200, help="plain pycolmap only up to this N "
                    "(exhaustive matching grows with N^2)")
    args = ap.parse_args()
    try:
        ns = sorted({int(v) for v in args.views.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"--views {args.views!r}: expected comma-separated integers") from None
    template = trimmed_template(TEMPLATE, args.steps)
    limits = memory_limits(TEMPLATE)
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kai-bench-scale-") as tmp:
        for n in ns:
            print(f"N={n}: running ...", file=sys.stderr, flush=True)
            results[n] = bench_n(n, Path(tmp), args, limits, template)
            print(f"N={n}: {json.dumps(results[n])}", file=sys.stderr, flush=True)  # partial results survive
    print(f"scale benchmark, tier {args.tier}, {args.width}x{args.height}, up to {args.steps}, "
          f"K.txt {'kept' if args.with_k else 'removed'}; '!' = peak over the declared limit")
    print(report(results, args.steps))


if __name__ == "__main__":
    main()
