"""The radiance-field step's training and held-out evaluation on the best device there is, from prepared inputs.

Two modes. ``--prepare`` (here, with the project's venv: pycolmap, Open3D) runs the real ``radiance-field``
pipeline through the local engine on the synthetic sample and on fountain_p11 (standard tier: quality gate,
preprocess, camera poses with pycolmap; the field itself with few iterations, only so that the run completes), takes
the radiance-field task's own input artifacts (preprocessed images and the SfM model) from the run's scratch, reads
them exactly as the step does (``_nerf.load_posed`` at the step's ``max_image_size``: shrunk, undistorted, pixels
uint8, intrinsics, world-to-camera poses, sparse points) and saves that in ``INPUTS/NAME.npz``, with what the
engine reported in ``INPUTS/NAME.json``:

    .venv/bin/python bench/gpu_radiance_field.py --prepare --inputs .gpu

Without it, every ``INPUTS/*.npz`` goes through ``kai_steps.radiance_field.train`` (what the step runs between
loading and writing ``field.pt``) with the step's defaults (1500 iterations, 96 grid, 4096 rays, seed 0), on CUDA
when torch sees it. Per set it prints one JSON line: device, train wall (ray setup, iterations and the held-out
evaluation, after one short untimed warm-up per process), held-out PSNR, constant-colour PSNR, peak GPU memory, and
a raw marching-cubes pass on the field's opacity. The step's ``field_mesh`` also culls unseen faces, cleans and
decimates with Open3D: that part runs only where Open3D imports (``--mesh``), never on the GPU machine. With
``$OUT`` set the lines are also written to ``$OUT/gpu_radiance_field.json``. It needs numpy, OpenCV, torch,
scikit-image, lazy_loader and pydantic (no pycolmap, no Open3D), and imports ``steps/`` as ``kai_steps`` where that
is not installed:

    python3 bench/gpu_radiance_field.py --inputs .gpu                  # every set, step defaults, best device
    python3 bench/gpu_radiance_field.py --inputs .gpu --iterations 20 --device cpu --sets synthetic
    python3 bench/gpu_radiance_field.py --inputs .gpu --device cpu --stop-after 700   # CPU: time a fraction

On the device machine the missing pure-Python packages come as wheels in ``.gpu/whl`` (pydantic and its
pydantic-core for CPython 3.12, annotated-types, typing-inspection, typing-extensions, lazy_loader).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import itertools
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = ["synthetic", "fountain_p11"]
WARMUP = dict(iterations=5, grid_size=32, rays_per_batch=1024, seed=0)


def import_steps() -> str:
    """Make ``kai_steps`` importable: the installed package, else ``steps/`` under that name (the package-dir
    mapping of pyproject.toml, without an install)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        import kai_steps  # noqa: F401
        return "installed"
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("kai_steps", ROOT / "steps" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "steps")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["kai_steps"] = module
    spec.loader.exec_module(module)
    return "aliased steps/"


# --------------------------------------------------------------------------------------------------- prepare (here)

def _step_inputs(result, cache: Path) -> tuple[Path, Path]:
    """The input artifacts of the radiance-field task's successful attempt, in the run's kept scratch."""
    pods = [n for n in result.nodes.values() if n.type == "Pod" and n.template == "radiance-field"
            and n.phase == "Succeeded"]
    if not pods:
        raise RuntimeError(f"the run has no successful radiance-field task: {result.phase} {result.message}")
    found = list((cache / "runs" / result.name / "scratch").glob(f"*/{pods[0].id}/inputs/artifacts"))
    if not found:
        raise RuntimeError(f"no kept scratch for pod {pods[0].id} under {cache}")
    return found[0] / "images", found[0] / "sparse"


def prepare(names: list[str], inputs: Path, tier: str) -> None:
    import numpy as np

    from kai_flows.engine.runner import run_pipeline
    from kai_steps import _nerf
    from kai_steps.radiance_field import _image_dir, radiance_field
    from kai_steps.sample_scene import render_sample_scene

    max_image_size = inspect.signature(radiance_field).parameters["max_image_size"].default
    inputs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kai-gpu-rf-") as tmp:
        tmp = Path(tmp)
        for name in names:
            if name == "synthetic":
                render_sample_scene(tmp / "synthetic")
                images = tmp / "synthetic" / "images"
            else:
                images = DATASETS / name / "images"
            t0 = time.perf_counter()
            # The field here only lets the run complete; the device trains it for real from what it was given.
            result = run_pipeline(ROOT / "workflow_templates" / "radiance-field.yaml",
                                  parameters={"quality_tier": tier, "iterations": "60", "grid_size": "24"},
                                  inputs={"images": images}, out=tmp / f"out-{name}", progress=False,
                                  keep_scratch=True, cache=tmp / f"cache-{name}", store_dir=tmp / "store")
            wall = time.perf_counter() - t0
            img_dir, sparse = _step_inputs(result, tmp / f"cache-{name}")
            views, points = _nerf.load_posed(_image_dir(img_dir), sparse, max_image_size)
            arrays = {"names": np.array([v.name for v in views]), "K": np.stack([v.K for v in views]),
                      "R": np.stack([v.R for v in views]), "t": np.stack([v.t for v in views]),
                      "points": points.astype(np.float64)}
            for i, v in enumerate(views):
                arrays[f"image_{i}"] = v.image
                if not v.valid.all():
                    arrays[f"valid_{i}"] = v.valid
            np.savez_compressed(inputs / f"{name}.npz", **arrays)
            steps = {n.display_name: {"phase": n.phase, "wall_s": n.wall_seconds, "outputs": n.outputs}
                     for n in result.nodes.values()
                     if n.type == "Pod" and n.template in ("preprocess", "camera-poses", "radiance-field",
                                                           "field-mesh")}
            meta = {"set": name, "source": str(images), "tier": tier, "max_image_size": max_image_size,
                    "run_phase": result.phase, "run_message": result.message, "run_wall_s": round(wall, 1),
                    "steps": steps, "views": len(views), "points": len(points),
                    "image_size": list(views[0].image.shape[1::-1])}
            (inputs / f"{name}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
            size = (inputs / f"{name}.npz").stat().st_size
            print(f"{name}: {len(views)} views at {meta['image_size']}, {len(points)} points, run {result.phase} "
                  f"in {wall:.0f} s -> {inputs / (name + '.npz')} ({size / 2**20:.1f} MiB)", flush=True)


# ----------------------------------------------------------------------------------------------- train (any machine)

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def load_inputs(path: Path):
    import numpy as np

    from kai_steps._nerf import PosedImage

    with np.load(path) as z:
        views = []
        for i, name in enumerate(z["names"]):
            img = z[f"image_{i}"]
            valid = z[f"valid_{i}"] if f"valid_{i}" in z.files else np.ones(img.shape[:2], bool)
            views.append(PosedImage(str(name), z["K"][i], z["R"][i], z["t"][i], img, valid))
        return views, z["points"]


def marching_cubes(field) -> dict:
    """The first stage of field_mesh (opacity level 0.5, skimage), timed; the rest of it needs Open3D."""
    import skimage.measure
    import torch

    from kai_steps.radiance_field import DEFAULT_LEVEL

    t0 = time.perf_counter()
    with torch.no_grad():
        opacity = field.opacity(field.density[0, 0], 1.0).cpu().numpy()
    if not opacity.min() < DEFAULT_LEVEL < opacity.max():
        return {"error": f"opacity spans [{opacity.min():.3g}, {opacity.max():.3g}]: no surface"}
    _, faces, _, _ = skimage.measure.marching_cubes(opacity, DEFAULT_LEVEL)
    return {"faces": len(faces), "wall_s": round(time.perf_counter() - t0, 3)}


def full_mesh(field, views, tmp: Path) -> dict:
    """The real field_mesh step on this field, written as the step writes it (needs Open3D)."""
    import numpy as np
    import torch

    from kai_steps._geometry import viewer_rotation
    from kai_steps.radiance_field import field_mesh

    rot = viewer_rotation(np.array([v.axis for v in views]), np.array([v.R[1] for v in views]))
    (tmp / "field").mkdir()
    torch.save({**field.state(), "cam_K": torch.as_tensor(np.stack([v.K for v in views])),
                "cam_R": torch.as_tensor(np.stack([v.R for v in views])),
                "cam_t": torch.as_tensor(np.stack([v.t for v in views])),
                "cam_size": torch.as_tensor([v.image.shape[1::-1] for v in views]),
                "viewer_from_model": torch.as_tensor(rot)}, tmp / "field" / "field.pt")
    t0 = time.perf_counter()
    m = field_mesh(tmp / "field", tmp / "mesh")
    return {"faces": m.num_faces, "vertices": m.num_vertices, "watertight": m.watertight,
            "wall_s": round(time.perf_counter() - t0, 2)}


class _Stop(Exception):
    pass


def timed_fraction(name: str, path: Path, args: argparse.Namespace, dev) -> dict:
    """The step's full schedule (``args.iterations``: coarse grid for the first quarter, then the fine grid),
    stopped after ``args.stop_after`` iterations; per-iteration wall of each phase from the progress callback
    (which syncs: meant for the CPU), and the whole training extrapolated from them. The final evaluation
    (32768 rays, no gradients) is left out of the estimate."""
    from kai_steps import radiance_field as rf

    views, points = load_inputs(path)
    coarse_until = args.iterations // 4 if args.grid_size >= 32 else 0
    stamps: list[float] = []

    def progress(it: int, loss: float) -> None:
        stamps.append(time.perf_counter())
        if it + 1 >= args.stop_after:
            raise _Stop

    t0 = time.perf_counter()
    try:
        rf.train(views, points, args.iterations, args.grid_size, args.rays, args.seed, dev, progress=progress)
    except _Stop:
        pass
    per = [b - a for a, b in itertools.pairwise([t0, *stamps])]  # per[i]: wall of iteration i (per[0] with the setup)
    coarse = per[1:coarse_until] if coarse_until else []
    fine = per[coarse_until + 1:]  # the first fine iteration also upsamples and rebuilds the optimiser
    row = {"set": name, "device": str(dev), "mode": f"full schedule stopped after {len(per)} of {args.iterations}",
           "iterations": args.iterations, "grid_size": args.grid_size, "rays_per_batch": args.rays,
           "measured_iterations": len(per), "measured_wall_s": round(stamps[-1] - t0, 2),
           "setup_and_first_s": round(per[0], 3),
           "coarse_s_per_iteration": round(sum(coarse) / len(coarse), 4) if coarse else None,
           "fine_s_per_iteration": round(sum(fine) / len(fine), 4) if fine else None,
           "fine_measured": len(fine)}
    if fine and (coarse or not coarse_until):
        est = per[0] + (coarse_until - 1) * (row["coarse_s_per_iteration"] or 0) + \
            (args.iterations - coarse_until) * row["fine_s_per_iteration"]
        row["estimated_train_wall_s"] = round(est, 1)
    return row


def run_set(name: str, path: Path, args: argparse.Namespace, dev, warm: dict) -> dict:
    import torch

    from kai_steps import radiance_field as rf

    views, points = load_inputs(path)
    if not warm:  # once per process, not timed: CUDA's context, kernels and allocator; torch's first calls
        t0 = time.perf_counter()
        rf.train(views, points, dev=dev, **WARMUP)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        warm["wall_s"] = round(time.perf_counter() - t0, 2)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    field, scores = rf.train(views, points, args.iterations, args.grid_size, args.rays, args.seed, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    row = {"set": name, "device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
           "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
           "views": len(views), "held_out_views": sum(1 for i in range(len(views)) if i % 8 == 0)
           if len(views) >= 8 else 0, "image_size": list(views[0].image.shape[1::-1]),
           "iterations": args.iterations, "grid_size": args.grid_size, "grid": list(field.shape),
           "rays_per_batch": args.rays, "seed": args.seed,
           "train_wall_s": round(wall, 2), "s_per_iteration": round(wall / args.iterations, 5),
           **scores,
           "peak_gpu_mem_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
           "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved(dev) if dev.type == "cuda" else None,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "warmup_s": warm.get("wall_s")}
    try:
        row["marching_cubes"] = marching_cubes(field)
    except Exception as e:  # a measurement, not the point of the run
        row["marching_cubes"] = {"error": f"{type(e).__name__}: {e}"}
    if args.mesh:
        tmp = Path(tempfile.mkdtemp(prefix="kai-gpu-rf-mesh-"))
        try:
            row["field_mesh"] = full_mesh(field.cpu(), views, tmp)
        except Exception as e:
            row["field_mesh"] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        row["field_mesh"] = "skipped (needs Open3D; --mesh runs it where Open3D imports)"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=Path, default=ROOT / ".gpu", help="folder of prepared NAME.npz")
    ap.add_argument("--prepare", action="store_true", help="run the pipeline here and write the inputs")
    ap.add_argument("--sets", nargs="+", default=None, help=f"default: {' '.join(SETS)} (those prepared)")
    ap.add_argument("--tier", default="standard", help="--prepare: the pipeline's quality tier")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--grid-size", type=int)
    ap.add_argument("--rays", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--mesh", action="store_true", help="also the full field_mesh step (needs Open3D)")
    ap.add_argument("--stop-after", type=int, help="time the full schedule's first N iterations per phase and "
                    "extrapolate (no PSNR): the CPU baseline where the whole run takes too long")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                    help="write gpu_radiance_field.json here (default $OUT)")
    args = ap.parse_args()
    how = import_steps()
    if args.prepare:
        prepare(args.sets or SETS, args.inputs, args.tier)
        return

    import torch

    from kai_steps import radiance_field as rf

    defaults = inspect.signature(rf.radiance_field).parameters
    for arg, param in (("iterations", "iterations"), ("grid_size", "grid_size"), ("rays", "rays_per_batch"),
                       ("seed", "seed")):
        if getattr(args, arg) is None:
            setattr(args, arg, defaults[param].default)
    dev = rf._device(args.device)
    names = args.sets or [n for n in SETS if (args.inputs / f"{n}.npz").is_file()]
    print(f"# kai_steps {how}; torch {torch.__version__}, CUDA {torch.version.cuda}, device {dev}"
          f"{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}; sets {names}; "
          f"{args.iterations} iterations, grid {args.grid_size}, {args.rays} rays", flush=True)
    rows, warm = [], {}
    for name in names:
        try:
            row = (timed_fraction(name, args.inputs / f"{name}.npz", args, dev) if args.stop_after else
                   run_set(name, args.inputs / f"{name}.npz", args, dev, warm))
        except Exception as e:  # report and go on with the next set
            import traceback

            traceback.print_exc()
            row = {"set": name, "device": str(dev), "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:  # after every set: a run cut short still leaves what it measured
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_radiance_field.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
