"""Textured against vertex-coloured: held-out views of the synthetic sample, PSNR and SSIM against the truth.

Renders the sample scene (30 views), builds a posed model from its exact cameras (no SfM: the comparison is about
colour, not poses), runs point_cloud -> mesh (vertex colours, 200k faces) and texture (the same mesh decimated to
50k faces, texture baked on it), then renders from held-out cameras that the pipeline never saw (between the input
azimuths, at an elevation between the two input rings, and one ring further out):
(a) the true scene with sample_scene's renderer, (b) the vertex-coloured mesh, (c) the textured mesh. Both
reconstructions are mapped back into the scene's frame through ``viewer_from_model`` and rendered unlit (their
colours are the photos', lighting included; the truth's lighting depends on the normal only, not the view).
PSNR and SSIM are taken over the pixels that the truth and both reconstructions cover (the object and the ground
the reconstruction reaches), the same pixels for both.

    PYTHONPATH=. python bench/texture.py [--work DIR] [--texture-size 2048] [--faces 50000] [--views 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kai_steps._colmap import strecha_model
from kai_steps._metrics import StrechaCamera
from kai_steps.mesh import mesh
from kai_steps.point_cloud import point_cloud
from kai_steps.sample_scene import _TARGET, _render, render_sample_scene
from kai_steps.texture import texture


def held_out_cameras(width: int, height: int) -> list[StrechaCamera]:
    """8 views between the input azimuths at 31 degrees (the input rings are at 22 and 40), 4 further out at 55."""
    f = 0.9 * width
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    cams = []
    for az_deg, el_deg, r in [*((45.0 * k + 10.0, 31.0, 3.4) for k in range(8)),
                              *((90.0 * k + 55.0, 55.0, 3.9) for k in range(4))]:
        az, el = np.radians(az_deg), np.radians(el_deg)
        C = _TARGET + r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        z = (_TARGET - C) / np.linalg.norm(_TARGET - C)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        cams.append(StrechaCamera(K, np.column_stack([x, np.cross(z, x), z]), C, width, height))
    return cams


def _cast(mesh: trimesh.Trimesh, cam: StrechaCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hit mask, face ids, barycentrics) of one ray per pixel centre (COLMAP's +0.5 convention, as the truth)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    dirs = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1) @ np.linalg.inv(cam.K).T @ cam.R.T
    rays = np.concatenate([np.broadcast_to(cam.C, dirs.shape), dirs], 1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    prim = hit["primitive_ids"].numpy()
    ok = prim != scene.INVALID_ID
    return ok, prim[ok].astype(np.int64), hit["primitive_uvs"].numpy()[ok]


def render_unlit(mesh: trimesh.Trimesh, cam: StrechaCamera) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float image in 0..255, hit mask) of a vertex-coloured or textured mesh, without lighting."""
    ok, face, bary = _cast(mesh, cam)
    w = np.column_stack([1 - bary.sum(1), bary])[:, :, None]
    img = np.zeros((ok.size, 3), np.float32)
    if mesh.visual.kind == "texture":
        uv = (mesh.visual.uv[mesh.faces[face]] * w).sum(1)
        tex = np.asarray(mesh.visual.material.image.convert("RGB"), np.float32)
        s = tex.shape[0]
        # OBJ UVs (v up) to texel coordinates (centres at integers), bilinear
        x = np.clip(uv[:, 0] * s - 0.5, 0, s - 1.001)
        y = np.clip((1 - uv[:, 1]) * s - 0.5, 0, s - 1.001)
        x0, y0 = x.astype(np.int64), y.astype(np.int64)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        img[ok] = ((tex[y0, x0] * (1 - fx) + tex[y0, x0 + 1] * fx) * (1 - fy)
                   + (tex[y0 + 1, x0] * (1 - fx) + tex[y0 + 1, x0 + 1] * fx) * fy)
    else:
        vc = np.asarray(mesh.visual.vertex_colors[:, :3], np.float32)
        img[ok] = (vc[mesh.faces[face]] * w).sum(1)
    return img.reshape(cam.height, cam.width, 3), ok.reshape(cam.height, cam.width)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((a[mask] - b[mask]) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11-tap Gaussian, sigma 1.5) of the luminance over the masked pixels."""
    grey = [cv2.cvtColor(np.clip(x, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY).astype(np.float64) for x in (a, b)]
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(grey[0]), blur(grey[1])
    vx, vy = blur(grey[0] ** 2) - mx**2, blur(grey[1] ** 2) - my**2
    cxy = blur(grey[0] * grey[1]) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(smap[mask].mean())


def to_scene(path: Path, summary: Path) -> trimesh.Trimesh:
    """A delivered mesh (viewer frame) moved back into the scene's (= the exact cameras') frame."""
    m = trimesh.load(path, process=False, force="mesh")
    rot = np.asarray(json.loads(summary.read_text())["viewer_from_model"])
    m.vertices = m.vertices @ rot  # x_model = rot^T x_viewer
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="keep the intermediate folders here (reused when present)")
    ap.add_argument("--views", type=int, default=30)
    ap.add_argument("--texture-size", type=int, default=2048)
    ap.add_argument("--faces", type=int, default=50_000, help="face budget of the textured model")
    ap.add_argument("--vertex-faces", type=int, default=200_000, help="face budget of the vertex-coloured model")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kai-texture-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    times = {}

    def run(name: str, fn, *a, **kw) -> None:
        if (work / name).exists():
            return
        t = time.monotonic()
        fn(*a, **kw)
        times[name] = round(time.monotonic() - t, 1)

    run("sample", render_sample_scene, work / "sample", views=args.views)
    if not (work / "posed").exists():
        strecha_model(work / "sample", work / "posed")
    images, sparse = work / "posed" / "images", work / "posed" / "sparse"
    run("dense", point_cloud, images, sparse, work / "dense", max_image_size=1000, density="medium")
    run("mesh", mesh, work / "dense", work / "mesh", face_budget=args.vertex_faces)
    tex_dir = f"textured-{args.faces}-{args.texture_size}"
    run(tex_dir, texture, work / "mesh", images, sparse, work / tex_dir, texture_size=args.texture_size,
        face_budget=args.faces)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"work folder {work}; step seconds {times}; peak RSS {peak:.0f} MiB")
    print("texture summary", (work / tex_dir / "summary.json").read_text().replace("\n", " "))

    truth_mesh = trimesh.load(work / "sample" / "gt_mesh.ply", process=False)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(truth_mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(truth_mesh.faces.astype(np.uint32)))
    vc = to_scene(work / "mesh" / "mesh.ply", work / "mesh" / "summary.json")
    tx = to_scene(work / tex_dir / "mesh.obj", work / tex_dir / "summary.json")
    meta = json.loads((work / "sample" / "scene.json").read_text())
    rows = []
    for k, cam in enumerate(held_out_cameras(meta["width"], meta["height"])):
        truth = _render(scene, truth_mesh, cam).astype(np.float32)
        truth_hit = np.any(truth != _render_sky(), axis=2)
        a, a_hit = render_unlit(vc, cam)
        b, b_hit = render_unlit(tx, cam)
        mask = truth_hit & a_hit & b_hit
        rows.append((k, float(mask.mean()), psnr(a, truth, mask), psnr(b, truth, mask), ssim(a, truth, mask),
                     ssim(b, truth, mask)))
        if args.work:
            cv2.imwrite(str(work / f"heldout_{k:02d}.jpg"), cv2.cvtColor(
                np.concatenate([truth, a, b], 1).clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    print(f"\nvertex colours: {len(vc.faces)} faces; textured: {len(tx.faces)} faces, "
          f"{args.texture_size}^2 texture")
    print(f"{'view':>4} {'pixels':>7} {'PSNR vc':>8} {'PSNR tex':>9} {'gain dB':>8} {'SSIM vc':>8} {'SSIM tex':>9}")
    for k, cover, pa, pb, sa, sb in rows:
        print(f"{k:>4} {cover:>7.1%} {pa:>8.2f} {pb:>9.2f} {pb - pa:>+8.2f} {sa:>8.3f} {sb:>9.3f}")
    mean = np.mean([r[1:] for r in rows], axis=0)
    print(f"mean {mean[0]:>7.1%} {mean[1]:>8.2f} {mean[2]:>9.2f} {mean[2] - mean[1]:>+8.2f} {mean[3]:>8.3f} "
          f"{mean[4]:>9.3f}")


def _render_sky() -> np.ndarray:
    from kai_steps.sample_scene import _SKY

    return _SKY.astype(np.float32)


if __name__ == "__main__":
    main()
