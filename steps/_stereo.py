"""Dense depth on CPU: neighbour selection, rectified-pair SGBM depth maps, TSDF fusion (Open3D VoxelBlockGrid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lazy_loader as lazy

from kai_steps._colmap import PosedViews, View

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
cv2 = lazy.load("cv2")
np = lazy.load("numpy")
o3d = lazy.load("open3d")

# Mean absolute Sobel response (grey levels) below which a matching window counts as textureless.
MIN_TEXTURE = 4.0


@dataclass
class DepthMap:
    """A depth map in a rectified camera: ``depth`` is z in that camera (0 = unknown); ``E`` world-to-camera 4x4."""

    ref: str
    src: str
    depth: np.ndarray
    color: np.ndarray
    K: np.ndarray
    E: np.ndarray

    def world_points(self, step: int = 1) -> np.ndarray:
        d = self.depth[::step, ::step]
        v, u = np.nonzero(d > 0)
        z = d[v, u]
        x = (u * step - self.K[0, 2]) * z / self.K[0, 0]
        y = (v * step - self.K[1, 2]) * z / self.K[1, 1]
        cam = np.stack([x, y, z], 1)
        R, t = self.E[:3, :3], self.E[:3, 3]
        return (cam - t) @ R


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _scene_depths(pv: PosedViews) -> list[float]:
    """A typical scene depth per view: median depth of its sparse points, else distance to where the axes meet."""
    views = pv.views
    centers = np.array([v.center for v in views])
    axes = np.array([v.axis for v in views])
    # Least-squares point closest to every optical axis (the object an orbit looks at).
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, a in zip(centers, axes, strict=True):
        P = np.eye(3) - np.outer(a, a)
        A += P
        b += P @ c
    focus = np.linalg.lstsq(A, b, rcond=None)[0]
    spread = float(np.median(np.linalg.norm(centers - centers.mean(0), axis=1))) or 1.0
    out = []
    for v in views:
        rows = [pv.point_index[i] for i in v.point_ids if i in pv.point_index]
        if len(rows) >= 20:
            z = (pv.points[rows] @ v.R.T + v.t)[:, 2]
            z = z[z > 0]
            if z.size >= 20:
                out.append(float(np.median(z)))
                continue
        z = float((focus - v.center) @ v.axis)
        out.append(z if z > 0 else 3.0 * spread)
    return out


def select_pairs(pv: PosedViews, neighbours: int) -> list[tuple[int, int]]:
    """For each view, the ``neighbours`` best stereo partners: similar viewing direction, a triangulation angle
    near 10 degrees, and (with sparse points) many points in common."""
    views = pv.views
    depths = _scene_depths(pv)
    pairs = []
    for i, vi in enumerate(views):
        scored = []
        for j, vj in enumerate(views):
            if i == j or _angle_deg(vi.axis, vj.axis) > 45:
                continue
            baseline = float(np.linalg.norm(vi.center - vj.center))
            tri = float(np.degrees(2 * np.arctan2(baseline / 2, depths[i])))
            if not 1.5 <= tri <= 35:
                continue
            shared = len(vi.point_ids & vj.point_ids) if vi.point_ids else 1
            if vi.point_ids and shared < 10:
                continue
            scored.append((shared * np.exp(-((tri - 10.0) / 8.0) ** 2), j))
        pairs += [(i, j) for _, j in sorted(scored, reverse=True)[:neighbours]]
    return pairs


def _depth_range(pv: PosedViews, v: View, R_rect: np.ndarray, fallback: float) -> tuple[float, float]:
    rows = [pv.point_index[i] for i in v.point_ids if i in pv.point_index]
    if len(rows) >= 20:
        z = ((pv.points[rows] @ v.R.T + v.t) @ R_rect.T)[:, 2]
        z = z[z > 0]
        if z.size >= 20:
            lo, hi = np.percentile(z, [1, 99])
            return float(lo) * 0.75, float(hi) * 1.35
    return fallback / 2.5, fallback * 2.5


def _rectification(v1: View, v2: View, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A common rectified orientation (Fusiello): x along the baseline from view 1 to view 2, z the mean viewing
    direction. Returns (R_rect world-to-rect, K1, K2, baseline); the principal points put ``focus`` at the image
    centre of both views, so the scene straddles zero disparity and no view loses it off-frame however much the
    pair converges or whichever way the baseline points."""
    x = v2.center - v1.center
    baseline = float(np.linalg.norm(x))
    x /= baseline
    z = v1.axis + v2.axis
    y = np.cross(z, x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    R_rect = np.stack([x, y, z])
    h, w = v1.image.shape[:2]
    f = float((v1.K[0, 0] + v1.K[1, 1] + v2.K[0, 0] + v2.K[1, 1]) / 4)
    Ks = []
    for v in (v1, v2):
        q = R_rect @ (focus - v.center)
        Ks.append(np.array([[f, 0, w / 2 - f * q[0] / q[2]], [0, f, h / 2 - f * q[1] / q[2]], [0, 0, 1.0]]))
    return R_rect, Ks[0], Ks[1], baseline


def pair_depth(pv: PosedViews, i: int, j: int, scene_depth: float, block_size: int = 5) -> DepthMap | None:
    """Rectify views i and j, match with semi-global block matching, return depth in i's rectified camera."""
    v1, v2 = pv.views[i], pv.views[j]
    h, w = v1.image.shape[:2]
    focus = v1.center + scene_depth * v1.axis
    R_rect, K1, K2, baseline = _rectification(v1, v2, focus)
    zero = np.zeros(5)
    maps1 = cv2.initUndistortRectifyMap(v1.K, zero, R_rect @ v1.R.T, K1, (w, h), cv2.CV_32FC1)
    maps2 = cv2.initUndistortRectifyMap(v2.K, zero, R_rect @ v2.R.T, K2, (w, h), cv2.CV_32FC1)
    img1 = cv2.remap(v1.image, *maps1, cv2.INTER_LINEAR)
    img2 = cv2.remap(v2.image, *maps2, cv2.INTER_LINEAR)
    valid1 = cv2.remap(np.full(v1.image.shape[:2], 255, np.uint8), *maps1, cv2.INTER_NEAREST) > 0
    f = K1[0, 0]
    offset = K1[0, 2] - K2[0, 2]  # disparity = f * baseline / z + offset
    zlo, zhi = _depth_range(pv, v1, R_rect @ v1.R.T, scene_depth)
    dmin = int(np.floor(f * baseline / zhi + offset))
    dmax = int(np.ceil(f * baseline / zlo + offset))
    num = int(np.clip(16 * np.ceil((dmax - dmin) / 16), 16, 16 * (w // 32)))
    # Columns of view 1 that can see their match in view 2 at every searched disparity (SGBM's own window); a pair
    # far wider than its depth (close-ups beside an orbit) leaves none, and OpenCV would fail on a negative size.
    if w + min(dmin, 0) - max(dmin + num, 0) < w // 4:
        return None
    sgbm = cv2.StereoSGBM_create(minDisparity=dmin, numDisparities=num, blockSize=block_size,
                                 P1=8 * 3 * block_size**2, P2=32 * 3 * block_size**2, disp12MaxDiff=1,
                                 uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    gray1 = cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY)
    disp = sgbm.compute(gray1, cv2.cvtColor(img2, cv2.COLOR_RGB2GRAY)).astype(np.float32) / 16.0
    # Textureless windows (sky, blown highlights) match anything: SGBM fills them from their surroundings.
    grad = np.abs(cv2.Sobel(gray1, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray1, cv2.CV_32F, 0, 1))
    textured = cv2.blur(grad, (2 * block_size + 1, 2 * block_size + 1)) > MIN_TEXTURE
    # ...and a block's width around them: SGBM fattens the foreground's depth over the edge of a blank region.
    textured = cv2.erode(textured.astype(np.uint8), np.ones((block_size + 2,) * 2, np.uint8)) > 0
    depth = np.zeros_like(disp)
    ok = (disp >= dmin) & (disp - offset > 0.5) & valid1 & textured
    depth[ok] = f * baseline / (disp[ok] - offset)
    depth[(depth < zlo) | (depth > zhi)] = 0
    if np.count_nonzero(depth) < 0.01 * depth.size:
        return None
    E = np.eye(4)
    E[:3, :3] = R_rect
    E[:3, 3] = -R_rect @ v1.center
    return DepthMap(v1.name, v2.name, np.ascontiguousarray(depth), np.ascontiguousarray(img1), K1, E)


def _spill(m: DepthMap, folder: Path, k: int) -> DepthMap:
    """Keep a depth map's pixels on disk (memory-mapped): memory stays flat however many views there are."""
    arrays = {}
    for name in ("depth", "color"):
        path = folder / f"{k:05d}_{name}.npy"
        np.save(path, getattr(m, name))
        arrays[name] = np.load(path, mmap_mode="r")
    return DepthMap(m.ref, m.src, arrays["depth"], arrays["color"], m.K, m.E)


def depth_maps(pv: PosedViews, neighbours: int,
               spill: Path | None = None) -> tuple[list[DepthMap], list[tuple[int, int]]]:
    """A depth map for every selected pair (pairs without enough valid depth are dropped); with ``spill``, the
    maps' pixels live in files there."""
    depths = _scene_depths(pv)
    pairs = select_pairs(pv, neighbours)
    maps = []
    for i, j in pairs:
        m = pair_depth(pv, i, j, depths[i])
        if m is not None:
            maps.append(_spill(m, spill, len(maps)) if spill is not None else m)
    return maps, pairs


@dataclass
class Fusion:
    grid: o3d.t.geometry.VoxelBlockGrid
    voxel: float
    bbox: tuple[np.ndarray, np.ndarray]


def scene_bounds(maps: list[DepthMap]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.concatenate([m.world_points(step=8) for m in maps])
    lo, hi = np.percentile(pts, [1, 99], axis=0)
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _clipped(m: DepthMap, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The depth map with points outside the robust scene box removed (stray matches must neither carve nor add
    surface), and the world points kept."""
    depth = np.array(m.depth)
    v, u = np.nonzero(depth > 0)
    pw = m.world_points()
    inside = np.all((pw >= lo) & (pw <= hi), axis=1)
    depth[v[~inside], u[~inside]] = 0
    return depth, pw[inside]


def fuse(maps: list[DepthMap], voxels_across: int, block_count: int | None = None) -> Fusion:
    """Integrate every depth map into a TSDF; a surface voxel needs agreeing observations to survive extraction."""
    lo, hi = scene_bounds(maps)
    voxel = float(np.linalg.norm(hi - lo) / voxels_across)
    block = 16
    if block_count is None:
        # Blocks the surface touches, with room for the truncation band on both sides (the hash grows if short).
        keys = set()
        for m in maps:
            k = np.floor((_clipped(m, lo, hi)[1][::4] - lo) / (voxel * block)).astype(np.int64)
            keys.update(np.unique((k[:, 0] << 42) | (k[:, 1] << 21) | k[:, 2]).tolist())
        block_count = len(keys) * 3 + 1000
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3d.core.float32, o3d.core.float32, o3d.core.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=block, block_count=block_count,
        device=o3d.core.Device("CPU:0"))
    for m in maps:
        depth, _ = _clipped(m, lo, hi)
        d = o3d.t.geometry.Image(o3d.core.Tensor(depth.astype(np.float32)))
        c = o3d.t.geometry.Image(o3d.core.Tensor(np.asarray(m.color, dtype=np.float32) / 255.0))
        K = o3d.core.Tensor(m.K, o3d.core.float64)
        E = o3d.core.Tensor(m.E, o3d.core.float64)
        zmax = float(depth.max()) * 1.01
        coords = grid.compute_unique_block_coordinates(d, K, E, 1.0, zmax)
        grid.integrate(coords, d, c, K, E, 1.0, zmax)
    return Fusion(grid, voxel, (lo, hi))
