"""Levels of detail: find the model, decimate it keeping vertex colours, measure how far each LOD strays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lazy_loader as lazy

from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import linear_to_srgb
from kai_steps.convert import _load_input  # private in convert, reused for its clear read/no-faces errors

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
fast_simplification = lazy.load("fast_simplification")
np = lazy.load("numpy")
scipy = lazy.load("scipy")
trimesh = lazy.load("trimesh")

MODEL_SUFFIXES = (".ply", ".glb", ".obj")  # in order of preference: ply carries vertex colours losslessly
BORDER_SLACK = 1.02  # a LOD may exceed its face target by 2% before the held border is let go


def _ply_has_colors(path: Path) -> bool:
    with path.open("rb") as f:
        header = f.read(4096).split(b"end_header", 1)[0]
    return b"property uchar red" in header or b"property float red" in header


def find_model(models: Path) -> Path:
    """The mesh file to read: ``models`` itself, or the preferred mesh in the folder (a coloured ply first)."""
    models = Path(models)
    if models.is_file():
        return models
    if not models.is_dir():
        raise ReconstructionInputError(f"model input {models} does not exist")
    found = [p for p in sorted(models.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in MODEL_SUFFIXES]
    if not found:
        raise ReconstructionInputError(f"model folder {models} holds no {', '.join(MODEL_SUFFIXES)} mesh")

    def rank(p: Path) -> tuple[int, int, str]:
        kind = MODEL_SUFFIXES.index(p.suffix.lower())
        return kind, 0 if kind == 0 and _ply_has_colors(p) else 1, p.name

    return min(found, key=rank)


def vertex_colors(mesh: trimesh.Trimesh) -> np.ndarray | None:
    """Per-vertex RGBA, from vertex colours, face colours or a texture; None for an uncoloured mesh."""
    if mesh.visual.kind is None:
        return None
    try:
        visual = mesh.visual.to_color() if mesh.visual.kind == "texture" else mesh.visual
        return np.asarray(visual.vertex_colors, dtype=np.uint8)  # face colours are averaged onto vertices
    except Exception:  # a texture trimesh cannot sample (no image or no UVs): treat as uncoloured
        return None


def _gltf_vertex_colors(path: Path) -> np.ndarray | None:
    """A glTF's COLOR_0 as sRGB RGBA bytes (COLOR_0 is linear by the glTF spec), or None without one. Read without
    materials: with one, trimesh files COLOR_0 away where vertex_colors cannot see it."""
    back = trimesh.load(path, process=False, force="mesh", skip_materials=True)
    if back.visual.kind != "vertex":
        return None
    rgba = np.asarray(back.visual.vertex_colors, dtype=np.uint8).copy()
    rgba[:, :3] = np.round(linear_to_srgb(rgba[:, :3] / 255.0) * 255.0).astype(np.uint8)
    return rgba


def load_model(path: Path) -> trimesh.Trimesh:
    """The mesh at ``path`` welded (split seams would open under decimation), with sRGB vertex colours if it has
    any (a glTF's linear COLOR_0 converted back to sRGB)."""
    mesh = _load_input(path)
    gltf = Path(path).suffix.lower() in (".glb", ".gltf")
    rgba = _gltf_vertex_colors(path) if gltf else None
    rgba = vertex_colors(mesh) if rgba is None else rgba
    out = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=rgba, process=False)
    out.merge_vertices(merge_tex=True, merge_norm=True)
    out.update_faces(out.nondegenerate_faces())
    out.remove_unreferenced_vertices()
    if len(out.faces) == 0:
        raise ReconstructionInputError(f"mesh {path} has only degenerate faces")
    return out


def decimate(mesh: trimesh.Trimesh, faces: int, colors_from: trimesh.Trimesh | None = None) -> trimesh.Trimesh:
    """Quadric decimation to about ``faces`` faces keeping the open borders in place; colours come from the
    nearest vertex of ``colors_from`` (default ``mesh``), so a LOD decimated from a finer LOD still takes its
    colours from the source.

    Borders are where a scan stops (ground cut-off, holes); collapsing their vertices pulls the outline inwards,
    which on sceaux_castle's 200k-face mesh made the LODs' Hausdorff error 3.4-8x gltf-transform's (meshoptimizer)
    at the same face count. With the border vertices held it matches gltf-transform. Where the border alone holds
    more vertices than the budget allows, the rest is decimated without holding it, so the budget always holds."""
    if faces >= len(mesh.faces):
        return mesh.copy()
    v, f = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)
    v, f = fast_simplification.simplify(v, f, target_count=faces, preserve_border=True)
    if len(f) > faces * BORDER_SLACK:  # the held border left too many faces: give it up for the remainder
        v, f = fast_simplification.simplify(v, f, target_count=faces)
    source = mesh if colors_from is None else colors_from
    rgba = None
    # fast-simplification moves and merges vertices but knows nothing of colours: the closest source vertex
    # to each surviving one lies on the patch it collapsed, so its colour is the local one.
    if source.visual.kind == "vertex":
        _, idx = scipy.spatial.cKDTree(source.vertices).query(v)
        rgba = np.asarray(source.visual.vertex_colors, dtype=np.uint8)[idx]
    out = trimesh.Trimesh(v, f, vertex_colors=rgba, process=False)
    out.remove_unreferenced_vertices()
    return out


class SurfaceDistance:
    """Symmetric point-to-surface distances from one reference mesh to others, from seeded surface samples.

    Distances are exact point-to-triangle (Open3D's raycasting scene), so an unchanged LOD scores 0 rather than
    the sampling spacing a point-to-point cKDTree would report. The reference's scene and samples are built once.
    """

    def __init__(self, reference: trimesh.Trimesh, samples: int = 20000) -> None:
        self.samples = samples
        self.points, _ = trimesh.sample.sample_surface(reference, samples, seed=0)
        self.scene = self._scene(reference)

    @staticmethod
    def _scene(mesh: trimesh.Trimesh) -> Any:  # an open3d RaycastingScene; open3d is imported lazily
        import open3d as o3d  # heavy (1.4 s): imported only when a step measures

        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                            o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
        return scene

    @staticmethod
    def _distance(scene: Any, points: np.ndarray) -> np.ndarray:
        import open3d as o3d

        return scene.compute_distance(o3d.core.Tensor(np.asarray(points, dtype=np.float32))).numpy()

    def to(self, other: trimesh.Trimesh) -> tuple[float, float]:
        """(max, mean) of the distances both ways: a sampled Hausdorff distance and its mean."""
        theirs, _ = trimesh.sample.sample_surface(other, self.samples, seed=1)
        d = np.concatenate([self._distance(self._scene(other), self.points), self._distance(self.scene, theirs)])
        return float(d.max()), float(d.mean())
