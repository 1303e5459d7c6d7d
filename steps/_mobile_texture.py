"""Textured levels of detail: a fresh atlas per level, the source's colour baked into it, and its glb and usdz.

Decimation keeps no UVs, so each level gets its own atlas (``_texture.unwrap``, the texture step's chunked xatlas)
and its texture is baked from the source: every texel of the atlas is mapped to its point on the level
(``_texture.rasterize``), that point to the closest point of the source surface (``compute_closest_points``), and
that to the source's texture through the source UVs (bilinear). Empty texels are filled as the texture step fills
them (``_texture.fill_gutters``), so mipmaps and bilinear filtering never bleed the background into the seams.

Textures are JPEG: KTX2 (KHR_texture_basisu) needs a Basis encoder, and none is installable in a step image without
a build: the Khronos binding (PyPI ``pyktx`` 4.4.2) ships only an sdist that needs libktx (no Debian package; its
build fails here), ``alktx2`` is a single-author 0.x wrapper, and npm ``ktx2-encoder`` targets browsers and would
need node in the image. AR Quick Look reads PNG/JPEG only, so the usdz would need the JPEG anyway.

The files are written by ``_glb.glb_bytes`` and ``_export.write_usdz`` with the JPEG as their ``EncodedTexture``
(``encoded``). UVs here are glTF's (origin at the top left of the image); ``EncodedTexture`` holds them V up.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import lazy_loader as lazy

from kai_steps._export import EncodedTexture, unit_normals
from kai_steps._texture import fill_gutters, rasterize, unwrap

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

PADDING_TEXELS = 2  # between charts: bilinear filtering at the largest mip reads one texel across
JPEG_QUALITY = 90
UV_BITS = 12  # Draco texture coordinates: gltfpack's default; 4096 steps across a 2048 px atlas


@dataclass
class TexturedMesh:
    """A mesh with one baseColor texture: vertices in model units, glTF UVs, an sRGB (H, W, 3) uint8 image."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray
    image: np.ndarray

    @property
    def texture_px(self) -> int:
        return int(max(self.image.shape[:2]))


def source_texture(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-vertex UVs with V up as trimesh keeps them, sRGB (H, W, 3) uint8 image) of a textured mesh, else None."""
    visual = mesh.visual
    if visual.kind != "texture" or getattr(visual, "uv", None) is None or len(visual.uv) != len(mesh.vertices):
        return None
    material = visual.material
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        return None
    return np.asarray(visual.uv, dtype=np.float64), np.asarray(image.convert("RGB"), dtype=np.uint8)


def sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (n, 3) float of an image at UVs with V up (trimesh's convention), wrapping (glTF REPEAT)."""
    h, w = image.shape[:2]
    x = np.mod(uv[:, 0], 1.0) * w - 0.5
    y = (1.0 - np.mod(uv[:, 1], 1.0)) * h - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float32)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]

    return ((at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
            + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy)


def bake(level: trimesh.Trimesh, source: trimesh.Trimesh, source_uv: np.ndarray, source_image: np.ndarray,
         px: int) -> TexturedMesh:
    """The level with its own atlas (at most ``px`` square) holding the source's colour at the closest point."""
    import open3d as o3d

    atlas = unwrap(np.asarray(level.vertices), np.asarray(level.faces), px, gutter=PADDING_TEXELS)
    vertices = np.asarray(level.vertices, dtype=np.float64)[atlas.vmap]
    normals = unit_normals(level)[atlas.vmap]  # the level's smooth normals: no shading break along the atlas seams
    texel, face, bary = rasterize(atlas)
    points = np.einsum("nk,nkc->nc", np.column_stack([1 - bary.sum(axis=1), bary]), vertices[atlas.faces[face]])
    scene = o3d.t.geometry.RaycastingScene()
    src_faces = np.asarray(source.faces)
    scene.add_triangles(o3d.core.Tensor(np.asarray(source.vertices, dtype=np.float32)),
                        o3d.core.Tensor(src_faces.astype(np.uint32)))
    near = scene.compute_closest_points(o3d.core.Tensor(points.astype(np.float32)))
    prim = near["primitive_ids"].numpy().astype(np.int64)
    b = near["primitive_uvs"].numpy()
    w = np.stack([1 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], axis=1)
    src_uv = np.einsum("nk,nkc->nc", w, source_uv[src_faces[prim]])
    width, height = atlas.width, atlas.height
    image = np.zeros((height * width, 3), dtype=np.float32)
    filled = np.zeros(height * width, dtype=bool)
    image[texel], filled[texel] = sample_texture(source_image, src_uv), True
    image = fill_gutters(image.reshape(height, width, 3), filled.reshape(height, width))
    return TexturedMesh(vertices, atlas.faces, normals, atlas.vertex_uv.astype(np.float32),
                        np.clip(np.round(image), 0, 255).astype(np.uint8))


def jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def encoded(t: TexturedMesh) -> EncodedTexture:
    """The level's texture as the glb and usdz writers embed it: JPEG, UVs V up."""
    return EncodedTexture(np.column_stack([t.uv[:, 0], 1.0 - t.uv[:, 1]]), jpeg(t.image), "image/jpeg")


def to_trimesh(t: TexturedMesh) -> trimesh.Trimesh:
    """The textured mesh as trimesh keeps it (V up), e.g. for a preview."""
    from PIL import Image

    uv = np.column_stack([t.uv[:, 0], 1.0 - t.uv[:, 1]])
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(t.image))
    return trimesh.Trimesh(t.vertices, t.faces, vertex_normals=t.normals, visual=visual, process=False)


def from_trimesh(mesh: trimesh.Trimesh) -> TexturedMesh | None:
    """A textured mesh read back (e.g. a level's glb loaded by trimesh), else None."""
    found = source_texture(mesh)
    if found is None:
        return None
    uv, image = found
    return TexturedMesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64),
                        unit_normals(mesh), np.column_stack([uv[:, 0], 1.0 - uv[:, 1]]).astype(np.float32), image)
