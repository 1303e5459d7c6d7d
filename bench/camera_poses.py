"""Benchmark: the camera_poses step against plain pycolmap, side by side, on the same photos and machine.

Plain pycolmap is the reference configuration of ../shared/datasets/README.md: one SIMPLE_RADIAL camera, SIFT,
exhaustive matching, default incremental mapping, with the same max_image_size, threads and seed as our step.

    PYTHONPATH=. python bench/camera_poses.py [--sets sample fountain_p11 herz_jesus_p8 sceaux_castle] [--no-k]

``--no-k`` copies each set's photos to a temporary folder without its K.txt: both sides start from the photos alone.

Columns: wall and CPU seconds (CPU time is the fair figure on a machine other jobs share), the CPU-time ratio to
plain pycolmap, registered/total images, mean reprojection error (px), camera position error mean/max in mm after
a Sim(3) alignment to the ground truth (the sample scene is in metres too), mean rotation error in degrees;
"-" where a set has no ground-truth poses.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pycolmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kai_steps._imageio import IMAGE_SUFFIXES
from kai_steps._metrics import pose_errors, read_strecha_dir
from kai_steps.camera_poses import camera_poses
from kai_steps.sample_scene import render_sample_scene

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def plain_pycolmap(image_dir: Path, work: Path, max_image_size: int, threads: int, seed: int):
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    db = work / "plain.db"
    pycolmap.set_random_seed(seed)
    eo = pycolmap.FeatureExtractionOptions()
    eo.max_image_size, eo.num_threads = max_image_size, threads
    ro = pycolmap.ImageReaderOptions()
    ro.camera_model = "SIMPLE_RADIAL"
    pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=ro, extraction_options=eo, device=pycolmap.Device.cpu)
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = threads
    pycolmap.match_exhaustive(db, matching_options=mo, device=pycolmap.Device.cpu)
    po = pycolmap.IncrementalPipelineOptions()
    po.num_threads, po.random_seed = threads, seed
    recs = pycolmap.incremental_mapping(db, image_dir, work / "plain", options=po)
    return max(recs.values(), key=lambda r: r.num_reg_images()), len(names)


def timed(fn, *args, **kwargs):
    """Wall and CPU seconds: the CPU figure is the fair one on a machine other jobs share."""
    w, c = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - w, time.process_time() - c


def row(label: str, wall: float, cpu: float, base_cpu: float, rec: pycolmap.Reconstruction, total: int,
        gt: dict | None) -> str:
    err = pose_errors(rec, gt) if gt else None
    acc = (f"{err.position_mean * 1000:9.2f} {err.position_max * 1000:9.2f} {err.rotation_mean_deg:8.3f}"
           if err else f"{'-':>9} {'-':>9} {'-':>8}")
    return (f"{label:36s} {wall:7.1f} {cpu:7.1f} {cpu / base_cpu:6.2f}x {rec.num_reg_images():>3}/{total:<3} "
            f"{rec.compute_mean_reprojection_error():7.3f} {acc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["sample", "fountain_p11", "herz_jesus_p8", "sceaux_castle"])
    ap.add_argument("--max-image-size", type=int, default=1600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-k", action="store_true", help="leave out the K.txt beside the photos (photos alone)")
    ap.add_argument("--threaded-mapping", action="store_true",
                    help="also run our step with deterministic=false (mapping on --threads threads, as plain maps)")
    args = ap.parse_args()
    pycolmap.logging.minloglevel = 2  # warnings and up: keep the table readable
    print(f"{'set / method':36s} {'wall s':>7} {'cpu s':>7} {'ratio':>7} {'reg':>7} {'reproj':>7} "
          f"{'pos mean':>9} {'pos max':>9} {'rot deg':>8}")
    with tempfile.TemporaryDirectory(prefix="kai-bench-") as tmp:
        tmp = Path(tmp)
        for name in args.sets:
            if name == "sample":
                render_sample_scene(tmp / "sample")
                image_dir, gt_dir = tmp / "sample" / "images", tmp / "sample" / "gt_cameras"
            else:
                if not (DATASETS / name).is_dir():
                    print(f"{name}: skipped ({DATASETS / name} is absent)")
                    continue
                image_dir, gt_dir = DATASETS / name / "images", DATASETS / name / "gt_dense_cameras"
            gt = read_strecha_dir(gt_dir) if gt_dir.is_dir() else None
            work = tmp / f"work-{name}"
            work.mkdir()
            if args.no_k:
                bare = work / "photos"
                bare.mkdir()
                for p in image_dir.iterdir():
                    if p.suffix.lower() in IMAGE_SUFFIXES:
                        shutil.copy2(p, bare / p.name)
                image_dir = bare
            (plain, total), w_plain, c_plain = timed(plain_pycolmap, image_dir, work, args.max_image_size,
                                                     args.threads, 0)
            summary, w_ours, c_ours = timed(camera_poses, image_dir, work / "ours", max_image_size=args.max_image_size,
                                            num_threads=args.threads, seed=0)
            ours = pycolmap.Reconstruction(work / "ours" / "0")
            print(row(f"{name} / plain pycolmap", w_plain, c_plain, c_plain, plain, total, gt))
            print(row(f"{name} / camera_poses ({summary.camera_prior})", w_ours, c_ours, c_plain, ours, total, gt),
                  flush=True)
            if args.threaded_mapping:
                summary, w_ours, c_ours = timed(camera_poses, image_dir, work / "threaded",
                                                max_image_size=args.max_image_size, num_threads=args.threads, seed=0,
                                                deterministic=False)
                ours = pycolmap.Reconstruction(work / "threaded" / "0")
                print(row(f"{name} / camera_poses, threaded mapping", w_ours, c_ours, c_plain, ours, total, gt),
                      flush=True)


if __name__ == "__main__":
    main()
