"""Headless CPU previews of a coloured mesh: Open3D RaycastingScene, vertex colours, headlight shading."""

from __future__ import annotations

import lazy_loader as lazy

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
o3d = lazy.load("open3d")


BACKGROUND = np.array([245, 245, 245], dtype=np.float32)


def look_at_rays(eye: np.ndarray, target: np.ndarray, up: np.ndarray, fov_deg: float, width: int,
                 height: int) -> np.ndarray:
    """(H, W, 6) rays (origin, unit direction) of a pinhole camera at ``eye`` looking at ``target``; ``fov_deg`` is
    the vertical field of view."""
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    f = 0.5 * height / np.tan(np.radians(fov_deg) / 2)
    u, v = np.meshgrid(np.arange(width) + 0.5 - width / 2, np.arange(height) + 0.5 - height / 2)
    d = fwd * f + u[..., None] * right + v[..., None] * down
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return np.concatenate([np.broadcast_to(eye, d.shape), d], axis=-1).astype(np.float32)


def render(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, eye: np.ndarray, target: np.ndarray,
           up: np.ndarray = np.array([0.0, 1.0, 0.0]), fov_deg: float = 40.0, width: int = 640,
           height: int = 480) -> np.ndarray:
    """An RGB uint8 image: barycentric-interpolated vertex colours (grey if none) times two-sided Lambert shading
    from a light at the eye, on a light background."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    rays = look_at_rays(np.asarray(eye, float), np.asarray(target, float), np.asarray(up, float), fov_deg, width,
                        height)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    hit = np.isfinite(ans["t_hit"].numpy())
    prim = ans["primitive_ids"].numpy()[hit].astype(np.int64)
    normals = ans["primitive_normals"].numpy()[hit]
    shade = 0.25 + 0.75 * np.abs(np.sum(normals * rays[..., 3:][hit], axis=-1))
    if colors is None:
        rgb = np.full((prim.size, 3), 0.7, dtype=np.float32)
    else:
        uv = ans["primitive_uvs"].numpy()[hit]
        w = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
        rgb = np.einsum("nk,nkc->nc", w, colors[faces[prim]].astype(np.float32))
    img = np.broadcast_to(BACKGROUND, (height, width, 3)).copy()
    img[hit] = np.clip(rgb * shade[:, None] * 255.0, 0, 255)
    return img.astype(np.uint8)


def _fit_distance(points: np.ndarray, centre: np.ndarray, fwd: np.ndarray, up: np.ndarray, fov_deg: float,
                  aspect: float) -> float:
    """Distance back from ``centre`` along ``-fwd`` at which (nearly) every point falls inside the frame."""
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, fwd)
    rel = points - centre
    tv = np.tan(np.radians(fov_deg) / 2) * 0.92
    th = tv * aspect
    need = np.maximum(np.abs(rel @ right) / th, np.abs(rel @ cam_up) / tv) - rel @ fwd
    return float(np.percentile(need, 99.5))


def preview_views(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, width: int = 640,
                  height: int = 480) -> dict[str, np.ndarray]:
    """Three previews in the viewer frame (+Y up, front towards +Z): front, and 40 degrees to each side, from
    20 degrees above, each framed so the model (bar stray 0.5%) fills the picture."""
    sample = vertices[:: max(1, len(vertices) // 50000)]
    lo, hi = np.percentile(sample, [0.5, 99.5], axis=0)
    centre = (lo + hi) / 2
    fov = 36.0
    up = np.array([0.0, 1.0, 0.0])
    out = {}
    for name, azimuth in (("front", 0.0), ("left", -40.0), ("right", 40.0)):
        a, e = np.radians(azimuth), np.radians(20.0)
        back = np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
        dist = max(_fit_distance(sample, centre, -back, up, fov, width / height), 1e-6)
        out[name] = render(vertices, faces, colors, centre + dist * back, centre, up=up, fov_deg=fov, width=width,
                           height=height)
    return out
