"""Export the mesh to delivery formats (glb, obj, ply, stl, usdz), re-opening every file to check it.

glb/obj/ply/stl go through trimesh (glb optionally Draco-compressed with KHR_draco_mesh_compression via DracoPy);
usdz is built with usd-core: a ``UsdGeom.Mesh`` with per-vertex ``displayColor``, Y up, metres, packaged with
``UsdUtils.CreateNewUsdzPackage``. The mesh is already in a +Y-up viewer frame (see ``point_cloud``).
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError
from kai_steps._io import staged_dir, write_json

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

FORMATS = ("glb", "obj", "ply", "stl", "usdz")


class ConvertSummary(BaseModel):
    formats: list[str]
    files: dict[str, int]  # file name -> size in bytes
    num_vertices: int
    num_faces: int


class ExportCheckError(RuntimeError):
    """A written model file did not read back as the mesh that was exported."""


def _load_input(path: Path) -> trimesh.Trimesh:
    path = Path(path)
    if path.is_dir():
        path = path / "mesh.ply"
    if not path.is_file():
        raise ReconstructionInputError(f"mesh input {path} does not exist")
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:
        raise ReconstructionInputError(f"cannot read mesh {path}: {exc}") from None
    if len(mesh.faces) == 0:
        raise ReconstructionInputError(f"mesh {path} has no faces")
    return mesh


def _vertex_rgba(mesh: trimesh.Trimesh) -> np.ndarray | None:
    if mesh.visual.kind == "vertex":
        return np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)
    return None


def _write_usdz(mesh: trimesh.Trimesh, path: Path) -> None:
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdUtils, Vt

    with tempfile.TemporaryDirectory(prefix="kai-usd-") as tmp:
        usdc = Path(tmp) / f"{path.stem}.usdc"
        stage = Usd.Stage.CreateNew(str(usdc))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, "/Model")
        stage.SetDefaultPrim(root.GetPrim())
        geom = UsdGeom.Mesh.Define(stage, "/Model/Mesh")
        geom.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(np.asarray(mesh.vertices, dtype=np.float32)))
        geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, dtype=np.int32)))
        geom.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(np.asarray(mesh.faces, dtype=np.int32).ravel()))
        geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
        normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
        geom.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(normals))
        geom.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
        lo, hi = mesh.bounds
        geom.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, lo)), Gf.Vec3f(*map(float, hi))]))
        rgba = _vertex_rgba(mesh)
        if rgba is not None:
            colors = geom.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex)
            colors.Set(Vt.Vec3fArray.FromNumpy(rgba[:, :3].astype(np.float32) / 255.0))
        stage.GetRootLayer().Save()
        if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(usdc)), str(path)):
            raise ExportCheckError(f"usd-core could not package {path.name}")
    _clear_zip_times(path)


_DOS_EPOCH = (0, 0x21)  # time 00:00:00, date 1980-01-01: the earliest a zip entry can carry


def _clear_zip_times(path: Path) -> None:
    """Set every entry's time in a zip (local and central headers) to 1980-01-01 00:00, in place.

    usd-core stamps the packaging time into the usdz, the only bytes that differ between two packages of the same
    stage. Patched rather than re-zipped: a usdz's entries are padded to 64-byte alignment, which zipfile drops."""
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        raise ExportCheckError(f"{path.name} is not a zip archive")
    count, _, pos = struct.unpack_from("<HII", data, eocd + 10)
    for _ in range(count):
        local = struct.unpack_from("<I", data, pos + 42)[0]
        if data[pos:pos + 4] != b"PK\x01\x02" or data[local:local + 4] != b"PK\x03\x04":
            raise ExportCheckError(f"{path.name}: unexpected zip layout")
        struct.pack_into("<HH", data, pos + 12, *_DOS_EPOCH)
        struct.pack_into("<HH", data, local + 10, *_DOS_EPOCH)
        pos += 46 + sum(struct.unpack_from("<HHH", data, pos + 28))
    path.write_bytes(data)


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


def _check(path: Path, mesh: trimesh.Trimesh) -> None:
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
    # STL stores three corners per face; Draco may drop unreferenced/duplicate vertices. Others keep them exactly.
    expected_v = 3 * len(mesh.faces) if path.suffix == ".stl" else len(mesh.vertices)
    if nv != expected_v and not (path.suffix == ".glb" and 0 < nv <= expected_v):
        raise ExportCheckError(f"{path.name} re-opened with {nv} vertices, expected {expected_v}")


def _writers(draco: bool) -> dict[str, Callable[[trimesh.Trimesh, Path], None]]:
    def glb(m: trimesh.Trimesh, p: Path) -> None:
        p.write_bytes(trimesh.Scene(m).export(file_type="glb", extension_draco=draco))

    return {
        "glb": glb,
        "obj": lambda m, p: m.export(p, file_type="obj", include_normals=True, include_color=True),
        "ply": lambda m, p: m.export(p, file_type="ply", encoding="binary"),
        "stl": lambda m, p: m.export(p, file_type="stl"),
        "usdz": _write_usdz,
    }


# Peak RSS measured: 0.6 GiB for a 200k-face mesh to all five formats.
@step(image="export", cpu="1", memory="2Gi", pool="cpu-optimized", timeout="20m")
def convert(
    mesh: In[Path],
    models: Out[Path],
    formats: list[str] = ["glb", "obj", "ply", "stl", "usdz"],  # noqa: B006 (pydantic copies defaults)
    draco: bool = False,
    basename: str = "model",
) -> ConvertSummary:
    """Write ``models/<basename>.<fmt>`` for each format plus ``models/summary.json``; every file is re-opened."""
    wanted = [f.lower().lstrip(".") for f in formats]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ReconstructionInputError(f"unknown model format(s) {', '.join(map(repr, unknown))}; "
                                       f"supported: {', '.join(FORMATS)}")
    if not wanted:
        raise ReconstructionInputError("formats is empty: name at least one of " + ", ".join(FORMATS))
    if not basename or "/" in basename or basename.startswith("."):
        raise ReconstructionInputError(f"model basename {basename!r} is not a plain file name")
    src = _load_input(Path(mesh))
    writers = _writers(draco)
    files: dict[str, int] = {}
    with staged_dir(Path(models)) as out:
        for fmt in dict.fromkeys(wanted):
            path = out / f"{basename}.{fmt}"
            writers[fmt](src, path)
            _check(path, src)
            files[path.name] = path.stat().st_size
        summary = ConvertSummary(formats=list(dict.fromkeys(wanted)), files=files, num_vertices=len(src.vertices),
                                 num_faces=len(src.faces))
        write_json(out / "summary.json", {**summary.model_dump(), "draco": draco})
    return summary
