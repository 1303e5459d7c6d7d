"""Levels of detail: the named levels and their caps, finding the model, decimating it keeping vertex colours,
measuring how far each level strays."""

from __future__ import annotations

import json
import struct
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
# A finer level must hold at least this many times the faces of the level below it: a standard-tier textured model
# of 100k faces would otherwise ship "full" at 100k beside "medium" at 98k, two downloads of the same model.
MIN_LEVEL_STEP = 1.25

# Apple's Object Capture detail levels and their triangle caps (each level has fewer triangles than its cap),
# coarsest first. AR Quick Look's guidance is 100k polygons, so "full" is for web viewers on capable devices.
LEVELS = {"preview": 25_000, "reduced": 50_000, "medium": 100_000, "full": 250_000}


def level_target(name: str) -> int:
    """The face target that keeps a level under its cap even when decimation overshoots by ``BORDER_SLACK``."""
    return int((LEVELS[name] - 1) / BORDER_SLACK)


def plan_levels(names: list[str], faces: int) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """The levels to build as (name, face target) coarsest first, and the skipped ones with the reason. A level is
    skipped when the level below it already holds the whole source (it would be the same mesh) or nearly so (the
    source has fewer than MIN_LEVEL_STEP times its faces); the coarsest level asked for always exists."""
    if not names:
        raise ReconstructionInputError(f"levels is empty: name at least one of {', '.join(LEVELS)}")
    unknown = [n for n in names if n not in LEVELS]
    if unknown:
        raise ReconstructionInputError(f"unknown level name(s) {', '.join(map(repr, unknown))}; "
                                       f"known: {', '.join(LEVELS)}")
    kept: list[tuple[str, int]] = []
    skipped: dict[str, str] = {}
    for name in (n for n in LEVELS if n in names):
        if kept and faces <= kept[-1][1]:
            skipped[name] = (f"the source has {faces} faces, which {kept[-1][0]} already holds whole "
                             f"(a {name} level needs more than {level_target(kept[-1][0])})")
            continue
        if kept and faces < MIN_LEVEL_STEP * kept[-1][1]:
            skipped[name] = (f"the source has {faces} faces, less than {MIN_LEVEL_STEP}x the {kept[-1][1]} of "
                             f"{kept[-1][0]}: a {name} level would be nearly the same model")
            continue
        kept.append((name, min(faces, level_target(name))))
    return kept, skipped


def level_table(folder: Path, key: str, what: str, producer: str) -> list[dict]:
    """The non-empty level table ``key`` of the summary.json that ``producer`` wrote in ``folder`` (called ``what``
    in the errors)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReconstructionInputError(f"{what} {folder} does not exist")
    try:
        rows = json.loads((folder / "summary.json").read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        raise ReconstructionInputError(f"{what} {folder} holds no summary.json with a level table "
                                       f"(run {producer} first)") from None
    if not rows:
        raise ReconstructionInputError(f"{what} {folder} lists no levels")
    return rows


def _ply_has_colors(path: Path) -> bool:
    with path.open("rb") as f:
        header = f.read(4096).split(b"end_header", 1)[0]
    return b"property uchar red" in header or b"property float red" in header


def _textured(path: Path) -> bool:
    """Whether a glb or obj carries a base colour texture (read from its header or mtl, not loaded)."""
    try:
        if path.suffix.lower() == ".glb":
            from kai_steps._glb import glb_json

            return bool(glb_json(path.read_bytes()[:1 << 20]).get("textures"))
        if path.suffix.lower() == ".obj":
            with path.open("rb") as f:
                head = f.read(1 << 16)
            libs = [line.split(None, 1)[1].strip() for line in head.decode(errors="replace").splitlines()
                    if line.startswith("mtllib ") and len(line.split(None, 1)) == 2]
            return any(b"map_Kd" in (path.parent / lib).read_bytes() for lib in libs if (path.parent / lib).is_file())
    except (OSError, ValueError, KeyError, struct.error):
        return False
    return False


def find_model(models: Path) -> Path:
    """The mesh file to read: ``models`` itself, or the preferred mesh in the folder: a textured obj or glb first
    (convert's folder holds both beside a ply whose colours were sampled from that texture at the vertices, which
    the levels would inherit), else a coloured ply."""
    models = Path(models)
    if models.is_file():
        return models
    if not models.is_dir():
        raise ReconstructionInputError(f"model input {models} does not exist")
    found = [p for p in sorted(models.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in MODEL_SUFFIXES]
    if not found:
        raise ReconstructionInputError(f"model folder {models} holds no {', '.join(MODEL_SUFFIXES)} mesh")

    def rank(p: Path) -> tuple[int, int, int, str]:
        kind = MODEL_SUFFIXES.index(p.suffix.lower())
        # obj before glb among textured ones: it keeps the source's frame and units, as the ply does
        if _textured(p):
            return 0, -kind, 0, p.name
        return 1, kind, 0 if kind == 0 and _ply_has_colors(p) else 1, p.name

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
    # Collapses leave a few slivers of no area (55 of 49k faces on an 82k-face sphere); Draco drops them when it
    # quantizes, so a level would not re-open with its own face count
    out.update_faces(out.nondegenerate_faces())
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
