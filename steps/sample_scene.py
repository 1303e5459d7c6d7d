"""A synthetic sample scene with exact ground truth, rendered on the CPU.

A procedurally shaped and coloured object stands on a coloured ground plane; Open3D's RaycastingScene casts one
ray per pixel from cameras on two rings, and the colour comes from the hit triangle's vertex colours (barycentric
interpolation) with Lambert shading. The vertex colours are random at the mesh's edge scale (a few pixels in the
images), which gives SIFT plenty of distinctive blobs, plus a smooth component so coarse scales match too.

``path="rings"`` (the default, what tests and benchmarks rely on) alternates the views between two rings.
``path="capture"`` imitates a phone capture of ``views`` photos, in the order they were taken: an orbit at
shoulder height, one from above, then close-ups along half the object; exposure drifts from photo to photo (auto
exposure) and about one photo in seven has motion blur. ``holdout`` extra views (between the path's heights and
azimuths, never in ``images/``) go to ``holdout/`` for novel-view checks.

Output folder layout (the Strecha layout of ../shared/datasets):
    images/NNN.jpg, images/K.txt, gt_cameras/NNN.jpg.camera, gt_mesh.ply, scene.json
    [holdout/images/hNNN.jpg, holdout/gt_cameras/hNNN.jpg.camera]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import lazy_loader as lazy
from PIL import Image
from pydantic import BaseModel

from kai_flows.step import Out, step
from kai_steps._metrics import StrechaCamera, write_strecha_camera

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
cv2 = lazy.load("cv2")
np = lazy.load("numpy")
o3d = lazy.load("open3d")
trimesh = lazy.load("trimesh")

_TARGET = np.array([0.0, 0.0, 0.45])  # the point every camera looks at
_LIGHT = np.array([0.4, -0.3, 1.0]) / np.linalg.norm([0.4, -0.3, 1.0])
_LIGHT32 = _LIGHT.astype(np.float32)
_SKY = np.array([200, 215, 235], dtype=np.uint8)


class SampleSceneError(ValueError):
    """Bad parameters for the sample scene."""


class SampleSummary(BaseModel):
    views: int
    width: int
    height: int
    focal: float
    mesh_faces: int
    mesh_diagonal: float
    path: str = "rings"
    holdout: int = 0


def _colours(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex RGB: i.i.d. noise (fine detail) mixed with smooth random waves (coarse detail)."""
    fine = rng.uniform(0, 1, (len(points), 3))
    coarse = np.zeros((len(points), 3))
    for _ in range(6):
        freq = rng.normal(0, 4.0, 3)
        coarse += np.sin(points @ freq + rng.uniform(0, 2 * np.pi))[:, None] * rng.uniform(-1, 1, 3)
    coarse = 0.5 + 0.5 * np.tanh(coarse)
    return np.clip(0.55 * fine + 0.45 * coarse, 0, 1)


def _scene(rng: np.random.Generator) -> trimesh.Trimesh:
    """A bumpy blob and a box on a 5 m square ground, as one mesh with vertex colours."""
    blob = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    v = blob.vertices
    bumps = 1 + 0.12 * np.sin(3 * v[:, 0] + 1) * np.sin(2 * v[:, 1] + 2) + 0.08 * np.cos(5 * v[:, 2])
    blob.vertices = v * bumps[:, None] * np.array([0.55, 0.45, 0.7])
    blob.apply_translation([0, 0, -blob.vertices[:, 2].min() - 0.02])  # sink 2 cm so it meets the ground
    box = trimesh.creation.box(extents=[0.5, 0.5, 0.6])
    box.apply_transform(trimesh.transformations.rotation_matrix(0.5, [0, 0, 1]))
    box.apply_translation([1.0, -0.7, 0.29])
    bv, bf = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.04)
    box = trimesh.Trimesh(bv, bf)
    n = 120  # ground grid: 5 m / 120 = 4.2 cm cells
    xs = np.linspace(-2.5, 2.5, n + 1)
    gx, gy = np.meshgrid(xs, xs)
    gv = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    gf = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    ground = trimesh.Trimesh(gv, gf)
    mesh = trimesh.util.concatenate([ground, blob, box])
    mesh.visual.vertex_colors = (np.column_stack([_colours(mesh.vertices, rng), np.ones(len(mesh.vertices))])
                                 * 255).astype(np.uint8)
    return mesh


def _intrinsics(width: int, height: int) -> np.ndarray:
    f = 0.9 * width
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def _look_at(K: np.ndarray, C: np.ndarray, target: np.ndarray, width: int, height: int) -> StrechaCamera:
    z = (target - C) / np.linalg.norm(target - C)  # OpenCV camera: x right, y down, z forward
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return StrechaCamera(K, np.column_stack([x, y, z]), C, width, height)


def _orbit_point(target: np.ndarray, r: float, az: float, el: float) -> np.ndarray:
    return target + r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def _cameras(views: int, width: int, height: int, rng: np.random.Generator) -> list[StrechaCamera]:
    K = _intrinsics(width, height)
    cams = []
    for i in range(views):
        ring = i % 2  # alternate between a low and a high ring so neighbours overlap at two elevations
        az = 2 * np.pi * i / views + rng.uniform(-0.03, 0.03)
        el = np.radians(22 if ring == 0 else 40) + rng.uniform(-0.03, 0.03)
        r = 3.4 + rng.uniform(-0.15, 0.15)
        cams.append(_look_at(K, _orbit_point(_TARGET, r, az, el), _TARGET, width, height))
    return cams


def _capture_cameras(views: int, width: int, height: int, rng: np.random.Generator) -> list[StrechaCamera]:
    """A hand-held capture in shooting order: 40% of the photos on a low orbit, 40% on a high one, 20% close-ups
    over half the object; hand jitter in position, height and aim."""
    K = _intrinsics(width, height)
    n_low = n_high = round(0.4 * views)
    n_close = views - n_low - n_high
    legs = [(n_low, 3.4, 15, 2 * np.pi), (n_high, 3.0, 45, 2 * np.pi), (n_close, 1.9, 25, np.pi)]
    cams = []
    for n, r0, el0, sweep in legs:
        for k in range(n):
            az = sweep * k / n + rng.uniform(-0.2, 0.2) * sweep / max(n, 1)
            el = np.radians(el0) + rng.uniform(-0.04, 0.04)
            C = _orbit_point(_TARGET, r0 + rng.uniform(-0.1, 0.1), az, el)
            aim = _TARGET + rng.normal(0, 0.05 if r0 > 2 else 0.12, 3)
            cams.append(_look_at(K, C, aim, width, height))
    return cams


def _holdout_cameras(count: int, width: int, height: int, rng: np.random.Generator) -> list[StrechaCamera]:
    """Views the path never takes: between its two orbit heights, at azimuths offset from its photos."""
    K = _intrinsics(width, height)
    return [_look_at(K, _orbit_point(_TARGET, 3.2, 2 * np.pi * (i + 0.5) / count + rng.uniform(-0.05, 0.05),
                                     np.radians(30) + rng.uniform(-0.03, 0.03)), _TARGET, width, height)
            for i in range(count)]


def _photo_effects(img: np.ndarray, rng: np.random.Generator, gain: float) -> np.ndarray:
    """Exposure gain and, for about one photo in seven, a linear motion blur of 3 to 9 pixels."""
    out = img.astype(np.float32) * np.float32(gain)
    if rng.uniform() < 1 / 7:
        length = int(rng.integers(3, 10))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1 / length
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        out = cv2.filter2D(out, -1, kernel / kernel.sum())
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _render(scene: o3d.t.geometry.RaycastingScene, mesh: trimesh.Trimesh, cam: StrechaCamera) -> np.ndarray:
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float32) + 0.5,
                       np.arange(cam.height, dtype=np.float32) + 0.5)  # pixel centres (COLMAP's convention)
    to_world = (cam.R @ np.linalg.inv(cam.K)).astype(np.float32)
    rays = np.empty((u.size, 6), np.float32)
    rays[:, :3] = cam.C
    rays[:, 3:] = u.reshape(-1, 1) * to_world[:, 0] + v.reshape(-1, 1) * to_world[:, 1] + to_world[:, 2]
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    ok = np.isfinite(hit["t_hit"].numpy())
    faces = mesh.faces[hit["primitive_ids"].numpy()[ok]]
    bary = hit["primitive_uvs"].numpy()[ok]
    vc = np.asarray(mesh.visual.vertex_colors[:, :3], np.float32) * np.float32(1 / 255)
    # Barycentric interpolation: hit = (1-u-v) v0 + u v1 + v v2.
    colour = (vc[faces[:, 0]] * (1 - bary[:, :1] - bary[:, 1:]) + vc[faces[:, 1]] * bary[:, :1]
              + vc[faces[:, 2]] * bary[:, 1:])
    shade = np.float32(0.35) + np.float32(0.65) * np.abs(hit["primitive_normals"].numpy()[ok] @ _LIGHT32)
    img = np.empty((u.size, 3), np.uint8)
    img[:] = _SKY
    img[ok] = np.clip(colour * (shade[:, None] * 255) + 0.5, 0, 255).astype(np.uint8)
    return img.reshape(cam.height, cam.width, 3)


@step(image="imaging", cpu="2", memory="2Gi", timeout="10m")
def render_sample_scene(out: Out[Path], views: int = 30, width: int = 960, height: int = 720,
                        seed: int = 0, path: Literal["rings", "capture"] = "rings",
                        holdout: int = 0) -> SampleSummary:
    """Render the sample scene into ``out`` (a new folder) and return what was made."""
    if path not in ("rings", "capture"):
        raise SampleSceneError(f"path must be 'rings' or 'capture', got {path!r}")
    if not 0 <= holdout <= 360:
        raise SampleSceneError(f"holdout must be between 0 and 360, got {holdout}")
    if not 3 <= views <= 360:
        raise SampleSceneError(f"views must be between 3 and 360, got {views}")
    if not (64 <= width <= 8192 and 64 <= height <= 8192):
        raise SampleSceneError(f"image size must be 64..8192 pixels a side, got {width}x{height}")
    out = Path(out)
    if out.exists():
        raise SampleSceneError(f"output folder already exists: {out}")
    rng = np.random.default_rng(seed)
    mesh = _scene(rng)
    cams = (_cameras if path == "rings" else _capture_cameras)(views, width, height, rng)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    tmp = out.with_name(f".{out.name}.partial")  # publish the folder whole or not at all
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "gt_cameras").mkdir()
    # Photo effects and held-out views draw from their own generators: the rings output stays as it always was.
    fx_rng = np.random.default_rng([seed, 1])
    gains = np.exp(np.cumsum(fx_rng.normal(0, 0.06, views)).clip(-0.35, 0.3))  # auto exposure drifting
    for i, cam in enumerate(cams):
        name = f"{i:03d}.jpg"
        img = _render(scene, mesh, cam)
        if path == "capture":
            img = _photo_effects(img, fx_rng, float(gains[i]))
        Image.fromarray(img).save(tmp / "images" / name, quality=95)
        write_strecha_camera(tmp / "gt_cameras" / f"{name}.camera", cam)
    if holdout:
        (tmp / "holdout" / "images").mkdir(parents=True)
        (tmp / "holdout" / "gt_cameras").mkdir()
        for i, cam in enumerate(_holdout_cameras(holdout, width, height, np.random.default_rng([seed, 2]))):
            name = f"h{i:03d}.jpg"
            Image.fromarray(_render(scene, mesh, cam)).save(tmp / "holdout" / "images" / name, quality=95)
            write_strecha_camera(tmp / "holdout" / "gt_cameras" / f"{name}.camera", cam)
    np.savetxt(tmp / "images" / "K.txt", cams[0].K, fmt="%.6f")
    mesh.export(tmp / "gt_mesh.ply")
    summary = SampleSummary(views=views, width=width, height=height, focal=float(cams[0].K[0, 0]),
                            mesh_faces=len(mesh.faces), mesh_diagonal=float(np.linalg.norm(np.ptp(mesh.bounds, 0))),
                            path=path, holdout=holdout)
    (tmp / "scene.json").write_text(json.dumps(summary.model_dump(exclude_defaults=True), indent=2) + "\n")
    tmp.rename(out)
    return summary
