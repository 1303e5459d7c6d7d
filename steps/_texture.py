"""Texture baking: a UV atlas (xatlas), colour from posed pinhole photos, gutters filled.

Atlas (``unwrap``, also the mobile levels'): xatlas (the maintained unwrapper behind Blender's and Godot's lightmap
UVs) segments the mesh into charts, parameterises and packs them, the same way every time (Open3D's
``compute_uvatlas`` does not: two runs give different atlases, which would break the pipelines' byte-identical
outputs). Left alone, xatlas grows charts over smooth surfaces until merging them dominates (a 24.5k-face sphere:
12.6 s; 200k faces of a scan: 622 s), so the mesh is cut into spatial chunks charted as separate meshes packed into
one atlas, and a chart's area is capped (see ``unwrap``). The texel centres are rasterised in UV space by casting
one ray per texel at the UV triangles laid flat (Open3D's RaycastingScene), which yields each texel's face and
barycentric coordinates, hence its 3D point and normal.

Colour: every view ray-casts the mesh into a depth map; a texel takes colour from a view only where it is in the
frame, faces the camera and is not behind the depth map (real visibility: a hidden face takes nothing). Its weight
favours frontal (cos^2 of the view angle), close and high-resolution (projected texel footprint, (f/z)^2) and sharp
views (variance of the Laplacian, relative to the set), and fades to little within a few pixels of a depth
discontinuity, where a photo mixes foreground and background. Views are blended by these weights, squared so the
best views dominate while the weights change smoothly across the surface: no hard seams where the best view changes.

Gutters: covered texels are grown outward a few texels (normalised box filtering), then the rest of the atlas is
filled pull-push (coarser averages of the charts), so mip-maps and bilinear filtering never mix in a blank colour.
UVs are in glTF's convention: u to the right, v down from the image's top row.
"""

from __future__ import annotations

from dataclasses import dataclass

import lazy_loader as lazy

# Heavy libraries load on first use.
cv2 = lazy.load("cv2")
np = lazy.load("numpy")
o3d = lazy.load("open3d")

MIN_TEXTURE, MAX_TEXTURE = 256, 8192
GROW_TEXELS = 4  # texels the charts are grown by before the pull-push fill
EDGE_PIXELS = 4.0  # photo pixels over which a view's weight fades in from a depth discontinuity
MIN_COS = 0.1  # views seeing a face at more than ~84 degrees give it nothing
CHUNK_FACES = 20_000  # faces charted together (see unwrap)
CHART_FACES = 400  # a chart covers at most the area of this many faces of the mesh, on average (see unwrap)


class TextureError(ValueError):
    """The mesh cannot be unwrapped, or no photo sees it (one-line message)."""


@dataclass
class PinholeView:
    """An undistorted photo: ``x_cam = R x + t`` in the mesh's frame, ``K`` with pixel centres at integers."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    image: np.ndarray  # RGB uint8

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t


@dataclass
class Atlas:
    """Atlas vertices (split along chart seams) with UVs; faces in the mesh's order; an image of width x height."""

    vmap: np.ndarray  # (V',) the mesh vertex of each atlas vertex
    faces: np.ndarray  # (F, 3) into the atlas vertices
    vertex_uv: np.ndarray  # (V', 2) glTF convention (v down the image), in 0..1
    width: int
    height: int
    charts: int

    @property
    def uv(self) -> np.ndarray:
        """(F, 3, 2) per face corner."""
        return self.vertex_uv[self.faces]


@dataclass
class Bake:
    texture: np.ndarray  # (height, width, 3) sRGB uint8
    covered: float  # fraction of chart texels that some photo saw
    chart_texels: int
    seen: np.ndarray  # (height, width) bool: texels coloured from a photo (the rest are filled)


def check_texture_size(size: int) -> None:
    if size < MIN_TEXTURE or size > MAX_TEXTURE or size & (size - 1):
        raise TextureError(f"texture_size {size} must be a power of two from {MIN_TEXTURE} to {MAX_TEXTURE}")


def _chunks(vertices: np.ndarray, faces: np.ndarray, limit: int) -> list[np.ndarray]:
    """Face indices split into spatially compact groups of at most ``limit`` (median cuts on the longest axis; the
    stable sort keeps the cut, hence the atlas, the same every run)."""
    centres = vertices[faces].mean(axis=1)
    out, stack = [], [np.arange(len(faces))]
    while stack:
        idx = stack.pop()
        if len(idx) <= limit:
            out.append(idx)
            continue
        pts = centres[idx]
        order = np.argsort(pts[:, int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))], kind="stable")
        stack += [idx[order[:len(idx) // 2]], idx[order[len(idx) // 2:]]]
    return out


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, gutter: int = 4) -> Atlas:
    """A UV atlas packed into at most ``size`` x ``size`` texels with ``gutter`` texels around each chart (xatlas).

    Charting spatial chunks of ``CHUNK_FACES`` as separate meshes, with a chart's area capped at that of
    ``CHART_FACES`` average faces, keeps xatlas near linear (spheres: 24.5k faces 1.3 s against 12.6 s unchunked,
    327k 65 s where unchunked did not finish in 10 minutes; bench/texture.py's scan: 50k faces 2.7 s against 20.1 s,
    200k 8.4 s against 622 s) with the same or better texel use. The chunks are cut the same way every run and
    xatlas is deterministic, so the atlas is too (two 200k-face unwraps compared equal)."""
    import xatlas

    V = np.asarray(vertices, np.float64)
    F = np.asarray(faces, np.int64)
    parts = _chunks(V, F, CHUNK_FACES)
    atlas = xatlas.Atlas()
    used = []
    corners = V[F]
    area = 0.5 * float(np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]),
                                      axis=1).sum())
    try:
        for idx in parts:
            keep, local = np.unique(F[idx], return_inverse=True)
            used.append((keep, local.reshape(-1, 3)))
            atlas.add_mesh(V[keep].astype(np.float32), local.reshape(-1, 3).astype(np.uint32))
        charts = xatlas.ChartOptions()
        charts.max_chart_area = area * min(1.0, CHART_FACES / max(len(F), 1))
        pack = xatlas.PackOptions()
        pack.resolution, pack.padding, pack.bilinear = size, gutter, True
        atlas.generate(charts, pack)
    except (RuntimeError, ValueError) as exc:
        raise TextureError(f"xatlas cannot unwrap the mesh: {str(exc).splitlines()[0][:200]}") from None
    if atlas.atlas_count != 1:
        raise TextureError(f"xatlas did not map the mesh's {len(F)} faces onto one atlas")
    vmaps, uvs, out, offset = [], [], np.empty((len(F), 3), np.int64), 0
    for i, (idx, (keep, local)) in enumerate(zip(parts, used, strict=True)):
        vmap, index, uv = atlas[i]
        if len(index) != len(local) or not np.array_equal(vmap[index], local):
            raise TextureError(f"xatlas did not map the mesh's {len(F)} faces onto one atlas")
        vmaps.append(keep[vmap])
        uvs.append(uv)
        out[idx] = index.astype(np.int64) + offset
        offset += len(vmap)
    # xatlas only approximates the resolution asked for; its UVs are fractions of its atlas, so the image is sized
    # down to the cap where it came out larger (the padding shrinks by the same few percent).
    return Atlas(np.concatenate(vmaps), out, np.clip(np.concatenate(uvs).astype(np.float64), 0.0, 1.0),
                 min(int(atlas.width), size), min(int(atlas.height), size), int(atlas.chart_count))


def rasterize(atlas: Atlas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(texel index into the flattened image, face, barycentrics (w1, w2)) of every texel centre inside a chart."""
    w, h = atlas.width, atlas.height
    flat = np.zeros((len(atlas.vertex_uv), 3), np.float32)
    flat[:, :2] = atlas.vertex_uv * [w, h]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(flat), o3d.core.Tensor(atlas.faces.astype(np.uint32)))
    texels, prims, barys = [], [], []
    rows = max(1, (1 << 22) // w)  # ~4M rays per batch
    cols = np.arange(w, dtype=np.float32) + 0.5
    for r0 in range(0, h, rows):
        r = np.arange(r0, min(h, r0 + rows), dtype=np.float32) + 0.5
        x, y = np.meshgrid(cols, r)
        rays = np.zeros((x.size, 6), np.float32)
        rays[:, 0], rays[:, 1], rays[:, 2], rays[:, 5] = x.ravel(), y.ravel(), 1.0, -1.0
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        prim = hit["primitive_ids"].numpy()
        ok = prim != scene.INVALID_ID
        texels.append(np.flatnonzero(ok) + r0 * w)
        prims.append(prim[ok].astype(np.int64))
        barys.append(hit["primitive_uvs"].numpy()[ok])
    return np.concatenate(texels), np.concatenate(prims), np.concatenate(barys)


def _depth_map(scene: o3d.t.geometry.RaycastingScene, view: PinholeView) -> np.ndarray:
    """z of the first surface at every pixel (inf where the ray misses the mesh)."""
    h, w = view.image.shape[:2]
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    to_world = (np.linalg.inv(view.K).T @ view.R).astype(np.float32)  # camera z = 1 along a ray: t_hit is depth
    rays = np.empty((u.size, 6), np.float32)
    rays[:, :3] = view.center
    rays[:, 3:] = u.reshape(-1, 1) * to_world[0] + v.reshape(-1, 1) * to_world[1] + to_world[2]
    return scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().reshape(h, w)


def _edge_weight(depth: np.ndarray) -> np.ndarray:
    """0.05 at a depth discontinuity (or the mesh's silhouette), rising to 1 over ``EDGE_PIXELS`` pixels."""
    finite = np.isfinite(depth)
    d = np.where(finite, depth, 0.0).astype(np.float32)
    lo = cv2.erode(np.where(finite, d, np.inf).astype(np.float32), np.ones((3, 3), np.uint8))
    hi = cv2.dilate(d, np.ones((3, 3), np.uint8))
    edge = (~finite) | (hi - lo > 0.03 * np.maximum(lo, 1e-9)) | ~np.isfinite(lo)
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(dist / EDGE_PIXELS, 0.05, 1.0)


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours at sub-pixel positions inside the image (pixel centres at integers), float32."""
    h, w = image.shape[:2]
    u0 = np.minimum(np.floor(u).astype(np.int64), w - 2)
    v0 = np.minimum(np.floor(v).astype(np.int64), h - 2)
    fu, fv = (u - u0)[:, None].astype(np.float32), (v - v0)[:, None].astype(np.float32)
    img = image.astype(np.float32) if image.dtype != np.float32 else image
    top = img[v0, u0] * (1 - fu) + img[v0, u0 + 1] * fu
    bottom = img[v0 + 1, u0] * (1 - fu) + img[v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: focus and motion blur lower it."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())


def bake(vertices: np.ndarray, faces: np.ndarray, atlas: Atlas, views: list[PinholeView]) -> Bake:
    """The atlas texture coloured from ``views`` (see the module docstring for visibility and weights)."""
    V = np.asarray(vertices, np.float64)
    F = np.asarray(faces, np.int64)
    texel, face, bary = rasterize(atlas)
    if texel.size == 0:
        raise TextureError("the UV atlas covers no texel centre: the mesh is degenerate")
    corners = V[F]
    face_n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    face_n /= np.maximum(np.linalg.norm(face_n, axis=1, keepdims=True), 1e-30)
    face_d = np.einsum("ij,ij->i", face_n, corners[:, 0])  # n.p, the same at every point of a (planar) face
    corners = corners[face]  # (N, 3, 3)
    points = (corners[:, 0] * (1 - bary[:, :1] - bary[:, 1:]) + corners[:, 1] * bary[:, :1]
              + corners[:, 2] * bary[:, 1:])
    del corners
    normals = face_n[face]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))
    sharp = np.array([sharpness(v.image) for v in views])
    sharp = np.clip(sharp / max(float(np.median(sharp)), 1e-9), 0.25, 1.0)
    acc = np.zeros((len(points), 3), np.float64)
    wsum = np.zeros(len(points), np.float64)
    # cos(view angle) = n.(C - p) / |C - p| = (n.C - n.p) / sqrt(|p|^2 - 2 p.C + |C|^2): two dot products a view.
    n_dot_p = np.einsum("ij,ij->i", normals, points)
    p_sq = np.einsum("ij,ij->i", points, points)
    for view, s in zip(views, sharp, strict=True):
        h, w = view.image.shape[:2]
        C = view.center
        # Faces first (a view sees a fraction of them): only the texels of faces that turn towards the camera and
        # are not wholly beyond one side of the frame go through the per-texel tests below, which they would fail.
        cam_v = V @ view.R.T + view.t
        with np.errstate(divide="ignore", invalid="ignore"):
            uv_v = (cam_v @ view.K.T)[:, :2] / cam_v[:, 2:]
        ahead = (cam_v[:, 2] > 1e-9)[F].all(axis=1)  # a face crossing the camera plane is kept: its image wraps
        beyond = ahead & ((uv_v < 0)[F].all(axis=1) | (uv_v > [w - 1, h - 1])[F].all(axis=1)).any(axis=1)
        keep = np.flatnonzero(((face_n @ C - face_d > 0) & ~beyond)[face])
        cos = (normals[keep] @ C - n_dot_p[keep]) / np.sqrt(np.maximum(
            p_sq[keep] - 2 * (points[keep] @ C) + C @ C, 1e-30))
        front = cos > MIN_COS
        keep, cos = keep[front], cos[front]
        cam = points[keep] @ view.R.T + view.t
        z = cam[:, 2]
        px = cam @ view.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = px[:, 0] / px[:, 2], px[:, 1] / px[:, 2]
        inside = (z > 1e-9) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        keep, cos, z, u, v = keep[inside], cos[inside], z[inside], u[inside], v[inside]
        depth = _depth_map(scene, view)
        iu, iv = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
        seen = depth[iv, iu]
        # Hidden behind another surface: the depth map holds something nearer than this texel's point.
        footprint = z / view.K[0, 0] / np.maximum(cos, 0.2)  # surface length of a pixel, on the slope
        visible = z <= seen + 0.005 * seen + 2.0 * footprint
        keep, cos, z, u, v, iu, iv = (a[visible] for a in (keep, cos, z, u, v, iu, iv))
        if keep.size == 0:
            continue
        colour = _bilinear(view.image, u, v)
        weight = (cos**2 * (view.K[0, 0] / z) ** 2 * s * _edge_weight(depth)[iv, iu]) ** 2
        acc[keep] += weight[:, None] * colour
        wsum[keep] += weight
    seen = wsum > 0
    if not seen.any():
        raise TextureError(f"none of the {len(views)} photos sees the mesh: the cameras and the mesh do not match")
    w, h = atlas.width, atlas.height
    image = np.zeros((w * h, 3), np.float32)
    mask = np.zeros(w * h, bool)
    image[texel[seen]] = (acc[seen] / wsum[seen, None]).astype(np.float32)
    mask[texel[seen]] = True
    filled = fill_gutters(image.reshape(h, w, 3), mask.reshape(h, w))
    return Bake(np.clip(filled + 0.5, 0, 255).astype(np.uint8), float(seen.mean()), int(texel.size),
                mask.reshape(h, w))


def fill_gutters(image: np.ndarray, mask: np.ndarray, grow: int = GROW_TEXELS) -> np.ndarray:
    """Every texel outside ``mask`` gets a colour: grown from its neighbours for ``grow`` texels, then pull-push
    averages of the charts, so filtering and mip-maps across a chart's border stay on chart colours."""
    img = np.where(mask[..., None], image, 0).astype(np.float32)
    m = mask.astype(np.float32)
    for _ in range(grow):
        s = cv2.boxFilter(img * m[..., None], -1, (3, 3), normalize=False)
        n = cv2.boxFilter(m, -1, (3, 3), normalize=False)
        new = (m == 0) & (n > 0)
        img[new] = s[new] / n[new, None]
        m[new] = 1.0
    return _pull_push(img, m > 0)


def _pull_push(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if mask.all() or not mask.any():
        return img
    h, w = mask.shape
    m = mask.astype(np.float32)
    small_w = cv2.resize(m, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    small_c = cv2.resize(img * m[..., None], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    ok = small_w > 0
    small = np.where(ok[..., None], small_c / np.maximum(small_w, 1e-12)[..., None], 0).astype(np.float32)
    coarse = _pull_push(small, ok)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(mask[..., None], img, up)
