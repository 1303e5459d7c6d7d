"""A textured mesh: the mesh step's surface, UV-unwrapped, its texture baked from the registered photos.

Reads ``mesh/mesh.ply`` (in the +Y-up viewer frame; ``viewer_from_model`` in its summary maps the COLMAP model's
cameras onto it), the preprocessed photos and the ``sparse`` model (undistorted to pinhole views through pycolmap,
so lens distortion is handled). Writes ``textured/mesh.obj`` + ``material.mtl`` + ``material_0.png`` (what
``convert`` reads) and ``summary.json``. See ``_texture`` for the atlas, visibility, weights and gutter fill.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import lazy_loader as lazy
from PIL import Image
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError, find_model, load_views
from kai_steps._geometry import decimate
from kai_steps._io import staged_dir, write_json
from kai_steps._texture import PinholeView, TextureError, bake, check_texture_size, unwrap

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
o3d = lazy.load("open3d")
trimesh = lazy.load("trimesh")


class TextureSummary(BaseModel):
    num_vertices: int  # after splitting along chart seams
    num_faces: int
    texture_size: int
    charts: int
    covered_fraction: float  # chart texels that some photo saw
    views: int  # the step's wall time is not here: outputs must be byte-identical run to run (timings has it)


def textured_mesh(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, uv: np.ndarray,
                  texture: np.ndarray) -> trimesh.Trimesh:
    """A trimesh with per-vertex UVs (OBJ convention, v up): vertices split where a corner's UV differs (chart
    seams); the normals are the unsplit mesh's, so the seams do not show in the shading."""
    corner_v = np.asarray(faces, np.int64).ravel()
    corner_uv = np.asarray(uv, np.float64).reshape(-1, 2)
    key = np.column_stack([corner_v, np.round(corner_uv * (1 << 24)).astype(np.int64)])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the vertices in the order they are first used
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    new_faces = rank[inverse.ravel()].reshape(-1, 3)
    src = corner_v[first[order]]
    gl_uv = corner_uv[first[order]] * [1.0, -1.0] + [0.0, 1.0]
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture), diffuse=[255] * 4)
    mesh = trimesh.Trimesh(np.asarray(vertices)[src], new_faces, vertex_normals=np.asarray(normals)[src],
                           process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=gl_uv, material=material)
    return mesh


def _manifold(surface: o3d.geometry.TriangleMesh) -> o3d.geometry.TriangleMesh:
    """The unwrapper needs a manifold mesh: drop the faces around non-manifold vertices (a few, where decimation or
    Poisson trimming pinched the surface) until none is left."""
    for _ in range(5):
        surface.remove_non_manifold_edges()
        bad = np.asarray(surface.get_non_manifold_vertices())
        if bad.size == 0:
            break
        tris = np.asarray(surface.triangles)
        surface.remove_triangles_by_mask(np.isin(tris, bad).any(axis=1))
        surface.remove_unreferenced_vertices()
    surface.remove_unreferenced_vertices()
    return surface


def _read_mesh(folder: Path) -> tuple[o3d.geometry.TriangleMesh, dict]:
    path = Path(folder) / "mesh.ply"
    if not path.is_file():
        raise ReconstructionInputError(f"mesh input {path} does not exist")
    surface = o3d.io.read_triangle_mesh(str(path))
    if len(surface.triangles) == 0:
        raise ReconstructionInputError(f"mesh {path} has no faces")
    meta_path = Path(folder) / "summary.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return surface, meta


# Measured on 2 shared cores (bench/texture.py's 200k-face scan, 30 views of 960 x 720): decimated to 50k faces with
# a 2048 texture 48 s, peak RSS 1.3 GiB; all 200k faces with a 4096 texture (high tier) 74 s, peak RSS 3.5 GiB.
@step(image="geometry", cpu="2", memory="6Gi", pool="memory-optimized", timeout="60m")
def texture(
    mesh: In[Path],
    images: In[Path],
    sparse: In[Path],
    textured: Out[Path],
    texture_size: int = 2048,
    face_budget: int = 0,
    max_image_size: int = 1600,
    enabled: bool = True,
) -> TextureSummary:
    """Write ``textured/mesh.obj`` (+ ``material.mtl``, ``material_0.png``: ``texture_size`` square, sRGB) and
    ``textured/summary.json``; ``face_budget`` > 0 decimates the mesh first (the texture carries the detail).
    ``enabled=False`` passes the vertex-coloured mesh folder through unchanged (``convert`` then works as before)."""
    if not enabled:
        surface, _ = _read_mesh(Path(mesh))
        with staged_dir(Path(textured)) as out:
            for name in ("mesh.ply", "summary.json"):
                if (Path(mesh) / name).is_file():
                    shutil.copyfile(Path(mesh) / name, out / name)
        return TextureSummary(num_vertices=len(surface.vertices), num_faces=len(surface.triangles), texture_size=0,
                              charts=0, covered_fraction=0.0, views=0)
    try:
        check_texture_size(texture_size)
    except TextureError as exc:
        raise ReconstructionInputError(str(exc)) from None
    if face_budget < 0 or 0 < face_budget < 100:
        raise ReconstructionInputError(f"face_budget {face_budget} must be 0 (keep the mesh) or at least 100")
    find_model(Path(sparse))  # a missing model is named before the photos are read
    surface, meta = _read_mesh(Path(mesh))
    if face_budget:
        surface = decimate(surface, face_budget)
    surface = _manifold(surface)
    if len(surface.triangles) == 0:
        raise ReconstructionInputError(f"no manifold surface left in {Path(mesh) / 'mesh.ply'}")
    surface.compute_vertex_normals()
    vertices, faces = np.asarray(surface.vertices), np.asarray(surface.triangles)
    pv = load_views(Path(images), Path(sparse), max_image_size)
    rot = np.asarray(meta.get("viewer_from_model") or np.eye(3), dtype=np.float64)
    # The mesh is in the viewer frame: x_viewer = rot @ x_model, so x_cam = (R rot^T) x_viewer + t.
    views = [PinholeView(v.K, v.R @ rot.T, v.t, v.image) for v in pv.views]
    try:
        # the texture stays texture_size square, as asked: xatlas's few percent short are stretched over it
        atlas = dataclasses.replace(unwrap(vertices, faces, texture_size), width=texture_size, height=texture_size)
        baked = bake(vertices, faces, atlas, views)
    except TextureError as exc:
        raise ReconstructionInputError(f"{exc} ({Path(mesh) / 'mesh.ply'})") from None
    out_mesh = textured_mesh(vertices, faces, np.asarray(surface.vertex_normals), atlas.uv, baked.texture)
    with staged_dir(Path(textured)) as out:
        out_mesh.export(out / "mesh.obj", file_type="obj", include_normals=True)
        summary = TextureSummary(num_vertices=len(out_mesh.vertices), num_faces=len(out_mesh.faces),
                                 texture_size=texture_size, charts=atlas.charts,
                                 covered_fraction=round(baked.covered, 4), views=len(views))
        carried = {k: meta[k] for k in ("viewer_from_model", "meters_per_unit") if meta.get(k) is not None}
        write_json(out / "summary.json", {**summary.model_dump(), **carried, "face_budget": face_budget,
                                          "source_faces": int(meta.get("num_faces") or len(faces))})
    return summary
