"""Export the mesh to delivery formats (glb, obj, ply, stl, usdz), re-opening every file to check it.

obj/ply/stl go through trimesh and keep the mesh's own frame and sRGB vertex colours: they are the exchange
copies (``mobile_lods`` and the report read the ply). glb and usdz are what viewers show, so they are placed
(``_export.place``: centred on X/Z, standing on Y = 0, in metres when the scale is known) and carry linear
colours and a matte material: the glb written directly (``_glb``, optionally Draco-compressed), the usdz with
usd-core (``UsdPreviewSurface`` reading ``displayColor``, packaged with ``UsdUtils.CreateNewUsdzPackage``). Every
usdz must pass usd-core's validators and the ARKit rules (``_usd_check``); the glTF validator needs node, so it
runs in the tests. The mesh is already in a +Y-up viewer frame (see ``point_cloud``).

A textured mesh (the ``texture`` step's folder: ``mesh.obj`` + mtl + png) keeps its texture in glb
(``baseColorTexture``), obj (``<basename>.mtl`` + ``<basename>.png`` beside it) and usdz (``UsdUVTexture``); the ply
gets per-vertex sRGB colours sampled from the texture (vertices merged back across chart seams), as finalize's
previews and ``mobile_lods`` read vertex colours.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import ExportCheckError, Placement, check_usdz, has_texture, place, write_usdz
from kai_steps._glb import DRACO_EXT, glb_bytes, glb_json
from kai_steps._io import staged_dir, write_json

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

FORMATS = ("glb", "obj", "ply", "stl", "usdz")

__all__ = ["FORMATS", "ConvertSummary", "ExportCheckError", "convert"]


class ConvertSummary(BaseModel):
    formats: list[str]
    files: dict[str, int]  # file name -> size in bytes
    num_vertices: int
    num_faces: int
    textured: bool = False


def _load_input(path: Path) -> trimesh.Trimesh:
    """The mesh: a file, or a folder's ``mesh.obj`` (textured, from ``texture``) or else its ``mesh.ply``."""
    path = Path(path)
    if path.is_dir():
        path = path / "mesh.obj" if (path / "mesh.obj").is_file() else path / "mesh.ply"
    if not path.is_file():
        raise ReconstructionInputError(f"mesh input {path} does not exist")
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:
        raise ReconstructionInputError(f"cannot read mesh {path}: {exc}") from None
    if len(mesh.faces) == 0:
        raise ReconstructionInputError(f"mesh {path} has no faces")
    return mesh


def known_scale(folder: Path, meters_per_unit: float) -> float:
    """The scale to declare: the parameter when given (> 0), else a positive ``meters_per_unit`` recorded in the
    input folder's summary.json by the step that learnt it, else 0 (unknown)."""
    if meters_per_unit < 0:
        raise ReconstructionInputError(f"meters_per_unit={meters_per_unit} is negative; give the model's scale in "
                                       "metres per unit, or 0 when it is unknown")
    if meters_per_unit > 0:
        return float(meters_per_unit)
    summary = Path(folder) / "summary.json" if Path(folder).is_dir() else Path(folder).with_name("summary.json")
    try:
        recorded = json.loads(summary.read_text()).get("meters_per_unit") or 0.0
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(recorded) if isinstance(recorded, int | float) and recorded > 0 else 0.0


def _read_counts(path: Path) -> tuple[int, int]:
    """(vertices, faces) of a written file, read back by a reader independent of the writer where possible."""
    if path.suffix == ".usdz":
        from pxr import Usd, UsdGeom

        stage = Usd.Stage.Open(str(path))
        meshes = [UsdGeom.Mesh(p) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
        if not meshes:
            raise ExportCheckError(f"{path.name} holds no UsdGeom.Mesh")
        pts = sum(len(m.GetPointsAttr().Get()) for m in meshes)
        faces = sum(len(m.GetFaceVertexCountsAttr().Get()) for m in meshes)
        return pts, faces
    loaded = trimesh.load(path, process=False, force="mesh")
    return len(loaded.vertices), len(loaded.faces)


def check_file(path: Path, mesh: trimesh.Trimesh) -> None:
    """The written file re-opens with the mesh's faces (and vertices, where the format keeps them); a usdz also
    passes the compliance check. Raises ExportCheckError naming the file."""
    if not path.is_file() or path.stat().st_size == 0:
        raise ExportCheckError(f"{path.name} was not written")
    try:
        nv, nf = _read_counts(path)
    except ExportCheckError:
        raise
    except Exception as exc:
        raise ExportCheckError(f"{path.name} does not re-open: {exc}") from None
    if nf != len(mesh.faces):
        raise ExportCheckError(f"{path.name} re-opened with {nf} faces, expected {len(mesh.faces)}")
    # STL stores three corners per face; Draco may split or merge vertices. Others keep them exactly.
    expected_v = 3 * len(mesh.faces) if path.suffix == ".stl" else len(mesh.vertices)
    draco = path.suffix == ".glb" and DRACO_EXT in glb_json(path.read_bytes()).get("extensionsRequired", [])
    if nv != expected_v and not (draco and nv > 0):
        raise ExportCheckError(f"{path.name} re-opened with {nv} vertices, expected {expected_v}")
    if path.suffix == ".usdz":
        check_usdz(path)


def check_glb_bytes(data: bytes, name: str, mesh: trimesh.Trimesh, draco: bool) -> None:
    """A glb in memory re-opens with trimesh (Draco decoded through DracoPy) with the mesh's faces and colours."""
    try:
        if draco and DRACO_EXT not in glb_json(data).get("extensionsRequired", []):
            raise ExportCheckError(f"{name} is not Draco-compressed")
        # skip_materials: with a material trimesh files COLOR_0 away where vertex_colors cannot see it
        back = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", skip_materials=True, process=False)
    except ExportCheckError:
        raise
    except Exception as exc:
        raise ExportCheckError(f"{name} does not re-open: {exc}") from None
    if len(back.faces) != len(mesh.faces):
        raise ExportCheckError(f"{name} re-opened with {len(back.faces)} faces, expected {len(mesh.faces)}")
    if mesh.visual.kind == "vertex" and back.visual.kind != "vertex":
        raise ExportCheckError(f"{name} lost its vertex colours")


def _check_texture(path: Path, mesh: trimesh.Trimesh) -> None:
    """A textured mesh's obj re-opens with its texture at full size and UVs on every vertex."""
    back = trimesh.load(path, process=False, force="mesh")
    image = mesh.visual.material.image
    if not has_texture(back) or back.visual.material.image.size != image.size \
            or len(back.visual.uv) != len(back.vertices):
        raise ExportCheckError(f"{path.name} re-opened without its {image.size[0]} x {image.size[1]} texture")


def vertex_coloured(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A textured mesh as per-vertex sRGB colours sampled from its texture, vertices merged across chart seams
    (where the split copies of a vertex differ, the first one's colour is kept); other meshes as they are."""
    if not has_texture(mesh):
        return mesh
    colours = mesh.visual.to_color().vertex_colors
    out = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.vertex_normals, vertex_colors=colours,
                          process=False)
    out.merge_vertices(merge_tex=True, merge_norm=True)
    return out


def _writers(draco: bool, placement: Placement) -> dict[str, Callable[[trimesh.Trimesh, Path], None]]:
    def glb(m: trimesh.Trimesh, p: Path) -> None:
        p.write_bytes(glb_bytes(m, placement, draco=draco, generator="kai-flows convert"))

    def obj(m: trimesh.Trimesh, p: Path) -> None:
        if has_texture(m):  # the mtl and png take the model's name: models/ may hold other meshes
            m = m.copy()
            m.visual.material = trimesh.visual.material.SimpleMaterial(
                image=m.visual.material.image, diffuse=[255] * 4, name=p.stem)
            m.export(p, file_type="obj", include_normals=True, include_texture=True, mtl_name=f"{p.stem}.mtl")
            _check_texture(p, m)
        else:
            m.export(p, file_type="obj", include_normals=True, include_color=True)

    return {
        "glb": glb,
        "obj": obj,
        "ply": lambda m, p: m.export(p, file_type="ply", encoding="binary"),
        "stl": lambda m, p: m.export(p, file_type="stl"),
        "usdz": lambda m, p: write_usdz(m, p, placement),
    }


# Peak RSS measured: 0.6 GiB for a 200k-face mesh to all five formats.
@step(image="export", cpu="1", memory="2Gi", pool="cpu-optimized", timeout="20m")
def convert(
    mesh: In[Path],
    models: Out[Path],
    formats: list[str] = ["glb", "obj", "ply", "stl", "usdz"],  # noqa: B006 (pydantic copies defaults)
    draco: bool = False,
    basename: str = "model",
    meters_per_unit: float = 0.0,
) -> ConvertSummary:
    """Write ``models/<basename>.<fmt>`` for each format plus ``models/summary.json``; every file is re-opened and
    every usdz passes the ARKit compliance check. ``meters_per_unit``: the model's known scale (0: unknown, unless
    the mesh folder's summary.json records it); glb and usdz declare metres only then."""
    wanted = [f.lower().lstrip(".") for f in formats]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ReconstructionInputError(f"unknown model format(s) {', '.join(map(repr, unknown))}; "
                                       f"supported: {', '.join(FORMATS)}")
    if not wanted:
        raise ReconstructionInputError("formats is empty: name at least one of " + ", ".join(FORMATS))
    if not basename or "/" in basename or basename.startswith("."):
        raise ReconstructionInputError(f"model basename {basename!r} is not a plain file name")
    scale = known_scale(Path(mesh), meters_per_unit)
    src = _load_input(Path(mesh))
    placement = place(src.vertices, scale)
    writers = _writers(draco, placement)
    with staged_dir(Path(models)) as out:
        for fmt in dict.fromkeys(wanted):
            path = out / f"{basename}.{fmt}"
            exported = vertex_coloured(src) if fmt == "ply" else src  # the ply keeps vertex colours, always
            writers[fmt](exported, path)
            check_file(path, exported)
        files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}  # with an obj's mtl and png
        summary = ConvertSummary(formats=list(dict.fromkeys(wanted)), files=files, num_vertices=len(src.vertices),
                                 num_faces=len(src.faces), textured=has_texture(src))
        # meters_per_unit only when known: mobile_lods passes it on to the levels of detail.
        write_json(out / "summary.json", {**summary.model_dump(), "draco": draco,
                                          "meters_per_unit": scale if scale > 0 else None,
                                          "placement": placement.describe()})
    return summary
