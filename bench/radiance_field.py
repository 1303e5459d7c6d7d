"""Radiance field on CPU: seconds per iteration and the PSNR reached, for a few grid sizes, then the mesh.

Trains ``radiance_field`` on the rendered sphere scene (exact cameras, steps/_nerf.py ``sphere_scene``) or on any
COLMAP model + images, and prints per grid size: seconds per iteration, held-out PSNR against the constant-colour
baseline, peak RSS, and for the sphere the mesh's mean distance to the true surface and its colour error.

    python bench/radiance_field.py                                   # sphere, grids 32 64 96
    python bench/radiance_field.py --grids 64 --iterations 1000 --rays 4096 --size 200x150
    python bench/radiance_field.py --images DIR --sparse DIR --grids 96 --iterations 2000 --device cuda
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
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kai_steps._nerf import sphere_colour, sphere_scene
from kai_steps.radiance_field import field_mesh, radiance_field


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--sparse", type=Path)
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--rays", type=int, default=2048)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--size", default="160x120", help="sphere scene image size WxH")
    ap.add_argument("--max-image-size", type=int, default=400)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory(prefix="kai-bench-rf-") as tmp:
        tmp = Path(tmp)
        sphere = args.images is None
        if sphere:
            w, h = map(int, args.size.split("x"))
            scene = sphere_scene(tmp / "scene", views=args.views, width=w, height=h)
            images, sparse = scene, scene / "sparse"
        else:
            images, sparse = args.images, args.sparse
        for g in args.grids:
            t0 = time.perf_counter()
            s = radiance_field(images, sparse, tmp / f"field{g}", iterations=args.iterations, grid_size=g,
                               rays_per_batch=args.rays, max_image_size=args.max_image_size, device=args.device,
                               min_psnr_gain=None)  # a benchmark reports the figures; the step's gate would stop it
            train_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            m = field_mesh(tmp / f"field{g}", tmp / f"mesh{g}")
            mesh_s = time.perf_counter() - t1
            line = (f"grid {g:4d} {s.grid}: {train_s / args.iterations:.3f} s/iteration "
                    f"({args.iterations} it x {args.rays} rays, {train_s:.1f} s incl. loading+eval), "
                    f"held-out PSNR {s.psnr:.2f} dB (train {s.train_psnr:.2f}, constant colour {s.baseline_psnr:.2f}), "
                    f"SSIM {'-' if s.ssim is None else f'{s.ssim:.3f}'}, "
                    f"mesh {m.num_faces} faces in {mesh_s:.1f} s")
            if sphere:
                mesh = trimesh.load(tmp / f"mesh{g}" / "mesh.ply", process=False)
                rot = np.array(json.loads((tmp / f"mesh{g}" / "summary.json").read_text())["viewer_from_model"])
                v = np.asarray(mesh.vertices) @ rot
                col = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
                line += (f", |r-1| mean {np.abs(np.linalg.norm(v, axis=1) - 1).mean():.4f}"
                         f" (voxel {2.4 / (g - 1):.4f}), colour error {np.abs(col - sphere_colour(v)).mean():.3f}")
            print(line, flush=True)
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
