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


def fit_eye(points: np.ndarray, fwd: np.ndarray, up: np.ndarray, fov_deg: float, aspect: float,
            margin: float) -> np.ndarray:
    """The closest eye of a camera looking along ``fwd`` whose picture holds every point with ``margin`` (a fraction
    of the half-width and half-height) to spare, the points centred in it.

    In the camera's axes (right r, up u, forward f) with the eye at (ex, ey, ez), a point (x, y, z) is inside when
    |x - ex| <= th (z - ez) and |y - ey| <= tv (z - ez): linear in the eye, so the closest eye has a closed form.
    The frustum is convex: a mesh whose vertices are all inside it is inside it whole."""
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, fwd)
    x, y, z = points @ right, points @ cam_up, points @ fwd
    tv = np.tan(np.radians(fov_deg) / 2) * (1.0 - margin)
    th = tv * aspect
    a, b = np.max(x - th * z), np.max(-x - th * z)  # ex - th ez >= a, -ex - th ez >= b
    c, d = np.max(y - tv * z), np.max(-y - tv * z)
    ez = min(-(a + b) / (2 * th), -(c + d) / (2 * tv), float(z.min()) - 1e-6)
    return (a - b) / 2 * right + (c - d) / 2 * cam_up + ez * fwd


def preview_views(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, width: int = 640,
                  height: int = 480, margin: float = 0.05) -> dict[str, np.ndarray]:
    """Three previews in the viewer frame (+Y up, front towards +Z): front, and 40 degrees to each side, from
    20 degrees above, each framed so that the whole model, every vertex that a face uses, falls inside the picture
    with ``margin`` to spare and centred (no percentile that would cut off a thin base or ground)."""
    used = np.asarray(vertices, dtype=np.float64)[np.unique(faces)]
    fov = 36.0
    up = np.array([0.0, 1.0, 0.0])
    out = {}
    for name, azimuth in (("front", 0.0), ("left", -40.0), ("right", 40.0)):
        a, e = np.radians(azimuth), np.radians(20.0)
        fwd = -np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
        eye = fit_eye(used, fwd, up, fov, width / height, margin)
        out[name] = render(vertices, faces, colors, eye, eye + fwd, up=up, fov_deg=fov, width=width, height=height)
    return out


def project(points: np.ndarray, eye: np.ndarray, target: np.ndarray, up: np.ndarray, fov_deg: float, width: int,
            height: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) pixel positions (x right, y down; pixel i spans [i, i + 1]) and (N,) depths along the view of
    ``points`` seen by the camera of ``look_at_rays``; a depth <= 0 is behind the eye."""
    fwd = np.asarray(target, float) - np.asarray(eye, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    f = 0.5 * height / np.tan(np.radians(fov_deg) / 2)
    d = np.asarray(points, float) - eye
    z = d @ fwd
    safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
    xy = np.stack([d @ right / safe * f + width / 2, d @ down / safe * f + height / 2], axis=-1)
    return xy, z
