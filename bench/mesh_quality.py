"""Dense + mesh quality: run point_cloud -> mesh on a posed image set and measure it.

Prints wall time and peak memory of each step, point and face counts, and, when a ground-truth mesh is given,
precision / recall / F-score at tau = 1% and 0.5% of the ground-truth bounding-box diagonal plus the Chamfer
distance (exact point-to-surface distances of 200k uniform samples each way).

    # exact poses from a Strecha-layout set (fountain_p11, or the synthetic sample scene with its gt_mesh.ply)
    python bench/mesh_quality.py --dataset ../shared/datasets/fountain_p11 --scale 0.33
    python bench/mesh_quality.py --dataset /tmp/sample --gt-mesh /tmp/sample/gt_mesh.ply
    # the same through SfM (camera_poses step), Sim(3)-aligned to the ground-truth cameras for the scores
    python bench/mesh_quality.py --dataset /tmp/sample --poses sfm --gt-mesh /tmp/sample/gt_mesh.ply
    # any COLMAP model + images
    python bench/mesh_quality.py --images IMAGES --sparse SPARSE [--gt-mesh MESH --gt-cameras DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycolmap
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kai_steps._colmap import find_model, strecha_cameras_dir, strecha_model
from kai_steps._geometry import bbox_diagonal, mesh_scores
from kai_steps._metrics import read_strecha_dir
from kai_steps.mesh import mesh
from kai_steps.point_cloud import point_cloud


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model_to_gt(sparse: Path, gt_cameras: Path | None) -> tuple[float, np.ndarray, np.ndarray]:
    """Sim(3) from the model's world onto the ground-truth cameras' world (identity without cameras)."""
    if gt_cameras is None:
        return 1.0, np.eye(3), np.zeros(3)
    rec = pycolmap.Reconstruction(str(find_model(sparse)))
    gt = read_strecha_dir(gt_cameras)
    imgs = [i for i in rec.images.values() if i.has_pose and i.name in gt]
    sim = pycolmap.estimate_sim3d(np.array([i.projection_center() for i in imgs]),
                                  np.array([gt[i.name].C for i in imgs]))
    return float(sim.scale), sim.rotation.matrix(), np.asarray(sim.translation)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, help="Strecha-layout folder: images/ + gt_dense_cameras/ or gt_cameras/")
    ap.add_argument("--poses", choices=["gt", "sfm"], default="gt", help="with --dataset: exact cameras or SfM")
    ap.add_argument("--scale", type=float, default=1.0, help="with --dataset --poses gt: image resize factor")
    ap.add_argument("--images", type=Path)
    ap.add_argument("--sparse", type=Path)
    ap.add_argument("--gt-mesh", type=Path)
    ap.add_argument("--gt-cameras", type=Path, help="Strecha .camera folder to Sim(3)-align an SfM model")
    ap.add_argument("--max-image-size", type=int, default=1000)
    ap.add_argument("--density", choices=["low", "medium", "high"], default="medium")
    ap.add_argument("--method", choices=["poisson", "tsdf"], default="poisson")
    ap.add_argument("--face-budget", type=int, default=200000)
    ap.add_argument("--keep", type=Path, help="copy the outputs here (a new folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="kai-mesh-bench-") as tmp_name:
        tmp = Path(tmp_name)
        rows: list[tuple[str, str]] = []
        gt_cameras = args.gt_cameras
        if args.dataset:
            gt_cameras = strecha_cameras_dir(args.dataset)
            if args.poses == "gt":
                t0 = time.perf_counter()
                model = strecha_model(args.dataset, tmp / "model", scale=args.scale)
                images, sparse = model / "images", model / "sparse"
                gt_cameras = None  # the model's world is the ground truth's world
                rows.append(("gt-pose model", f"{time.perf_counter() - t0:.1f} s"))
            else:
                from kai_steps.camera_poses import camera_poses

                t0 = time.perf_counter()
                images, sparse = args.dataset / "images", tmp / "sparse"
                s = camera_poses(images, sparse)
                rows.append(("camera_poses", f"{time.perf_counter() - t0:.1f} s, {s.registered}/{s.total} "
                                             f"registered, {s.points} points"))
        elif args.images and args.sparse:
            images, sparse = args.images, args.sparse
        else:
            ap.error("give --dataset, or --images and --sparse")

        t0 = time.perf_counter()
        pc = point_cloud(images, sparse, tmp / "dense", max_image_size=args.max_image_size, density=args.density)
        rows.append(("point_cloud", f"{time.perf_counter() - t0:.1f} s, peak {_peak_mib():.0f} MiB, "
                                    f"{pc.num_points:,} points, {pc.num_depth_maps} depth maps from "
                                    f"{pc.num_views} views, voxel {pc.voxel_size:.4g}"))
        t0 = time.perf_counter()
        ms = mesh(tmp / "dense", tmp / "mesh", method=args.method, face_budget=args.face_budget)
        rows.append(("mesh", f"{time.perf_counter() - t0:.1f} s, peak {_peak_mib():.0f} MiB, "
                             f"{ms.num_vertices:,} vertices, {ms.num_faces:,} faces ({ms.method})"))

        if args.gt_mesh:
            gt = trimesh.load(args.gt_mesh, force="mesh", process=False)
            recon = trimesh.load(tmp / "mesh" / "mesh.ply", force="mesh", process=False)
            rot = np.array(json.loads((tmp / "dense" / "summary.json").read_text())["viewer_from_model"])
            scale, R, t = _model_to_gt(sparse, gt_cameras)
            recon.vertices = scale * (np.asarray(recon.vertices) @ rot) @ R.T + t
            diag = bbox_diagonal(np.asarray(gt.vertices))
            t0 = time.perf_counter()
            for sc in mesh_scores(recon, gt, [0.01 * diag, 0.005 * diag]):
                pct = 100 * sc.tau / diag
                rows.append((f"tau {pct:.1f}% ({sc.tau:.4g})", f"precision {sc.precision:.3f}, recall "
                                                               f"{sc.recall:.3f}, F-score {sc.fscore:.3f}"))
            rows.append(("Chamfer", f"{sc.chamfer:.4g} ({100 * sc.chamfer / diag:.2f}% of the gt diagonal "
                                    f"{diag:.3g}); scoring {time.perf_counter() - t0:.1f} s"))
        if args.keep:
            import shutil

            shutil.copytree(tmp, args.keep)
    width = max(len(k) for k, _ in rows)
    print(f"mesh quality: {args.dataset or args.images} ({args.density}, max_image_size {args.max_image_size})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
