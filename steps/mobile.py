"""The mobile-optimisation steps: a mesh becomes levels of detail, then a Draco glb and a usdz within size budgets.

``mobile_lods`` decimates the model (quadric, fast-simplification) to fractions of its face count, keeping vertex
colours, and measures each LOD's distance from the original. ``mobile_package`` compresses every LOD to a Draco glb
and ships the finest LOD that fits each budget as ``model.glb`` and ``model.usdz``. Every written file is re-opened
and every usdz passes the ARKit compliance check. The glb and usdz are placed as ``convert`` places them (centred,
standing on Y = 0, metres only when the scale is known), all levels with the same placement so that switching
levels does not move the model; linear vertex colours and a matte material as in ``convert``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import ExportCheckError, Placement, place, write_usdz
from kai_steps._glb import glb_bytes, glb_json
from kai_steps._io import staged_dir, write_json
from kai_steps._mobile_lod import SurfaceDistance, decimate, find_model, load_model

# The same loading, re-open checks and scale lookup as convert, so both steps deliver the same files.
from kai_steps.convert import _load_input, check_file, check_glb_bytes, known_scale

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

MIN_FACES = 4  # a tetrahedron: below this a LOD is no longer a surface
_LOD_NAME = re.compile(r"^lod(\d+)\.ply$")


class MobileBudgetError(ValueError):
    """No level of detail fits a size budget (one-line message with the smallest size reached)."""


class LodSummary(BaseModel):
    source: str  # the file read
    source_faces: int
    faces: list[int]  # per LOD, finest first
    max_error: list[float]  # symmetric Hausdorff distance to the source, as a fraction of its bounding-box diagonal
    mean_error: list[float]  # mean of the same distances, same unit
    colors: bool


class PackageSummary(BaseModel):
    glb_lod: int
    glb_faces: int
    glb_bytes: int
    usdz_lod: int
    usdz_faces: int
    usdz_bytes: int
    compression_ratio: float  # plain glb bytes / Draco glb bytes of the shipped LOD


def _lod_targets(levels: list[float], faces: int, max_faces: int) -> list[int]:
    if not levels:
        raise ReconstructionInputError("levels is empty: give fractions such as [1.0, 0.5, 0.25, 0.1]")
    bad = [x for x in levels if not 0 < x <= 1]
    if bad:
        raise ReconstructionInputError(f"levels must lie in (0, 1]; got {bad}")
    if max_faces < MIN_FACES:
        raise ReconstructionInputError(f"max_faces={max_faces} is below {MIN_FACES}")
    # Levels are fractions of the finest LOD, itself capped at max_faces, so a 2M-face scan still yields
    # 100k/50k/25k/10k rather than four copies of the cap.
    base = min(faces, max_faces)
    targets = sorted({max(MIN_FACES, round(x * base)) for x in levels}, reverse=True)
    return [min(t, faces) for t in targets]


def _source_scale(path: Path) -> float:
    """Metres per unit of the model file, 0 when unknown. A glb is in metres (the glTF spec), unless it is one of
    ours that says its scale is unknown; a ply/obj takes the scale its folder's summary.json records (convert's)."""
    if path.suffix.lower() == ".glb":
        try:
            units = glb_json(path.read_bytes())["asset"]["extras"]["placement"]["units"]
        except (ValueError, KeyError, TypeError):
            return 1.0
        return 1.0 if units == "metres" else 0.0
    return known_scale(path, 0.0)


def _check_lod(path: Path, lod: trimesh.Trimesh) -> None:
    check_file(path, lod)  # faces and vertices read back exactly
    if lod.visual.kind == "vertex":
        back = trimesh.load(path, process=False, force="mesh")
        if back.visual.kind != "vertex":
            raise ExportCheckError(f"{path.name} lost its vertex colours")


# Measured on 2 CPU cores: 1.3M-face coloured source -> 4 LODs in 17 s, peak RSS 1.13 GiB; 82k faces: 8 s, 0.43 GiB.
@step(image="export", cpu="1", memory="2Gi", pool="cpu-optimized", timeout="30m")
def mobile_lods(
    models: In[Path],
    lods: Out[Path],
    levels: list[float] = [1.0, 0.5, 0.25, 0.1],  # noqa: B006 (pydantic copies defaults)
    max_faces: int = 100000,
) -> LodSummary:
    """Write ``lods/lod{i}.ply`` (finest first) and ``lods/summary.json`` with face counts and errors (and the
    model's scale when it is known, for ``mobile_package``)."""
    src_path = find_model(Path(models))
    scale = _source_scale(src_path)
    src = load_model(src_path)
    targets = _lod_targets(levels, len(src.faces), max_faces)
    diag = float(np.linalg.norm(src.extents)) or 1.0
    error = SurfaceDistance(src)
    rows = []
    with staged_dir(Path(lods)) as out:
        finer = src
        for i, target in enumerate(targets):
            # Each LOD is decimated from the one before (1.3M-face source: 28 s -> 17 s); colours and error still
            # come from the source.
            lod = finer = decimate(finer, target, colors_from=src)
            path = out / f"lod{i}.ply"
            lod.export(path, file_type="ply", encoding="binary")
            _check_lod(path, lod)
            hmax, hmean = error.to(lod)
            rows.append({"file": path.name, "target_faces": target, "faces": len(lod.faces),
                         "vertices": len(lod.vertices), "bytes": path.stat().st_size,
                         "max_error": hmax / diag, "mean_error": hmean / diag})
        summary = LodSummary(
            source=src_path.name, source_faces=len(src.faces), faces=[r["faces"] for r in rows],
            max_error=[round(r["max_error"], 6) for r in rows], mean_error=[round(r["mean_error"], 6) for r in rows],
            colors=src.visual.kind == "vertex",
        )
        write_json(out / "summary.json", {**summary.model_dump(), "diagonal": diag, "lods": rows,
                                          "meters_per_unit": scale if scale > 0 else None})
    return summary


def _read_lods(lods: Path) -> list[tuple[int, Path]]:
    lods = Path(lods)
    if not lods.is_dir():
        raise ReconstructionInputError(f"LOD folder {lods} does not exist")
    found = sorted((int(m.group(1)), p) for p in lods.iterdir() if (m := _LOD_NAME.match(p.name)))
    if not found:
        raise ReconstructionInputError(f"LOD folder {lods} holds no lod<N>.ply (run mobile_lods first)")
    return found


def _pick(sizes: list[int], budget_kb: int, what: str, names: list[str]) -> int:
    """Index of the first (finest) size within the budget, or a MobileBudgetError naming the smallest size."""
    for i, size in enumerate(sizes):
        if size <= budget_kb * 1024:
            return i
    j = int(np.argmin(sizes))
    raise MobileBudgetError(f"no LOD fits {what}_budget_kb={budget_kb}: the smallest {what} is {names[j]} at "
                            f"{sizes[j] / 1024:.1f} KB; raise the budget or add a coarser level to mobile_lods")


# Measured: four LODs of 100k..10k faces packaged in 2.8 s, peak RSS 0.32 GiB.
@step(image="export", cpu="1", memory="2Gi", pool="cpu-optimized", timeout="20m")
def mobile_package(
    lods: In[Path],
    package: Out[Path],
    glb_budget_kb: int = 2048,
    usdz_budget_kb: int = 4096,
    quantization_bits: int = 14,
    meters_per_unit: float = 0.0,
) -> PackageSummary:
    """Write ``package/model.glb`` (Draco), ``package/model.usdz``, ``package/lods/lod{i}.glb`` and a summary.
    ``meters_per_unit``: the model's known scale (0: unknown, unless ``lods/summary.json`` records it)."""
    if glb_budget_kb <= 0 or usdz_budget_kb <= 0:
        raise ReconstructionInputError(f"budgets must be positive; got glb_budget_kb={glb_budget_kb}, "
                                       f"usdz_budget_kb={usdz_budget_kb}")
    if not 8 <= quantization_bits <= 24:
        raise ReconstructionInputError(f"quantization_bits={quantization_bits} is outside 8..24 "
                                       "(fewer bits visibly distort the shape; Draco stores at most 30)")
    found = _read_lods(Path(lods))
    scale = known_scale(Path(lods), meters_per_unit)
    meshes = [(i, _load_input(p)) for i, p in found]
    meshes.sort(key=lambda im: -len(im[1].faces))  # finest first, whatever the numbering
    placement = place(meshes[0][1].vertices, scale)  # the finest level's: every level stands in the same place
    rows: list[dict] = []
    with staged_dir(Path(package)) as out:
        (out / "lods").mkdir()
        for i, mesh in meshes:
            data = glb_bytes(mesh, placement, draco=True, quantization_bits=quantization_bits,
                             generator="kai-flows mobile_package")
            name = f"lods/lod{i}.glb"
            check_glb_bytes(data, name, mesh, draco=True)
            (out / name).write_bytes(data)
            plain = len(glb_bytes(mesh, placement))
            rows.append({"lod": i, "faces": len(mesh.faces), "glb": name, "glb_bytes": len(data),
                         "plain_glb_bytes": plain, "compression_ratio": round(plain / len(data), 3)})
        g = _pick([r["glb_bytes"] for r in rows], glb_budget_kb, "glb", [Path(r["glb"]).name for r in rows])
        shutil.copyfile(out / rows[g]["glb"], out / "model.glb")
        u = _write_usdz_within(meshes, out, usdz_budget_kb, rows, placement)
        summary = PackageSummary(
            glb_lod=rows[g]["lod"], glb_faces=rows[g]["faces"], glb_bytes=rows[g]["glb_bytes"],
            usdz_lod=rows[u]["lod"], usdz_faces=rows[u]["faces"], usdz_bytes=(out / "model.usdz").stat().st_size,
            compression_ratio=rows[g]["compression_ratio"],
        )
        write_json(out / "summary.json", {**summary.model_dump(), "glb_budget_kb": glb_budget_kb,
                                          "usdz_budget_kb": usdz_budget_kb, "quantization_bits": quantization_bits,
                                          "placement": placement.describe(), "lods": rows})
    return summary


def _write_usdz_within(meshes: list[tuple[int, trimesh.Trimesh]], out: Path, budget_kb: int,
                       rows: list[dict], placement: Placement) -> int:
    """Write ``model.usdz`` from the finest LOD within the budget; returns its row. usdz stores data uncompressed,
    so its size is known only by writing it: try LODs finest first."""
    path = out / "model.usdz"
    sizes: list[int] = []
    for k, (_, mesh) in enumerate(meshes):
        write_usdz(mesh, path, placement)
        check_file(path, mesh)  # re-opens and passes the ARKit compliance check
        sizes.append(path.stat().st_size)
        rows[k]["usdz_bytes"] = sizes[-1]
        if sizes[-1] <= budget_kb * 1024:
            return k
    path.unlink()
    return _pick(sizes, budget_kb, "usdz", [f"lod{i}.usdz" for i, _ in meshes])
