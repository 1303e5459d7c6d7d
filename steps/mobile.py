"""The mobile-optimisation steps: a model becomes named levels of detail, each a Draco glb and a usdz, sized against
the viewers' published guidance, and the finest within size budgets is shipped as ``model.glb``/``model.usdz``.

``mobile_lods`` decimates the model (quadric, fast-simplification) to Apple's Object Capture levels (preview < 25k
triangles, reduced < 50k, medium < 100k, full < 250k; ``_mobile_lod.LEVELS``), keeping vertex colours, and measures
each level's distance from the original. A textured source gives each level its own atlas and baked texture (at
most 2048 px: ``_mobile_texture``). ``mobile_package`` writes every level as a Draco glb and a usdz, reports their
sizes against AR Quick Look's guidance (100k polygons, 2048 px textures) and Scene Viewer's (10 MB), and ships the
finest level that fits each budget. Every written file is re-opened and every usdz passes the ARKit compliance
check. The glb and usdz are placed as ``convert`` places them (+Y up, centred, standing on Y = 0, metres only when
the scale is known), all levels alike so that switching levels does not move the model.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import ExportCheckError, Placement, place, write_usdz
from kai_steps._glb import glb_bytes, glb_json
from kai_steps._io import staged_dir, write_json
from kai_steps._mobile_lod import (
    LEVELS,
    SurfaceDistance,
    decimate,
    find_model,
    level_table,
    load_model,
    plan_levels,
)
from kai_steps._mobile_texture import UV_BITS, TexturedMesh, bake, encoded, from_trimesh, source_texture, to_trimesh

# The same loading, re-open checks and scale lookup as convert, so both steps deliver the same files.
from kai_steps.convert import _load_input, check_file, check_glb_bytes, known_scale

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

MAX_TEXTURE_PX = 2048  # AR Quick Look's guidance; also the largest texture every mobile GPU samples
LEVEL_TEXTURE_PX = {"preview": 1024, "reduced": 2048, "medium": 2048, "full": 2048}
AR_QUICK_LOOK = {"max_polygons": 100_000, "max_texture_px": 2048}  # Apple's AR Quick Look guidance
SCENE_VIEWER = {"max_bytes": 10_000_000}  # Google's Scene Viewer: glb files up to 10 MB
_IN_MODEL_UNITS = Placement(1.0, (0.0, 0.0, 0.0), True)  # a level between the steps keeps the source's frame


class MobileBudgetError(ValueError):
    """No level of detail fits a size budget (one-line message with the smallest size reached)."""


class LodSummary(BaseModel):
    source: str  # the file read
    source_faces: int
    levels: list[str]  # the levels built, coarsest first
    faces: list[int]  # per level
    max_error: list[float]  # symmetric Hausdorff distance to the source, as a fraction of its bounding-box diagonal
    mean_error: list[float]  # mean of the same distances, same unit
    skipped: dict[str, str]  # level name -> why it was not built
    colors: bool
    textured: bool


class LevelSize(BaseModel):
    name: str
    triangles: int
    glb: str  # path in the package
    glb_bytes: int
    usdz: str
    usdz_bytes: int
    texture_px: int | None  # the largest side of the level's texture; None: vertex colours
    compression_ratio: float  # plain glb bytes / Draco glb bytes
    ar_quick_look_ok: bool  # within 100k polygons and 2048 px textures
    scene_viewer_ok: bool  # glb within 10 MB


class PackageSummary(BaseModel):
    glb_level: str
    glb_faces: int
    glb_bytes: int
    usdz_level: str
    usdz_faces: int
    usdz_bytes: int
    compression_ratio: float  # plain glb bytes / Draco glb bytes of the shipped level
    levels: list[LevelSize]  # coarsest first


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


def _write_textured_lod(path: Path, t: TexturedMesh, name: str) -> None:
    path.write_bytes(glb_bytes(to_trimesh(t), _IN_MODEL_UNITS, generator="kai-flows mobile_lods", texture=encoded(t),
                               extras={"kai:level": name, "units": "the source model's"}))
    back = _read_level(path)
    if not isinstance(back, TexturedMesh) or len(back.faces) != len(t.faces):
        raise ExportCheckError(f"{path.name} did not re-open as a textured mesh of {len(t.faces)} faces")


def _read_level(path: Path) -> trimesh.Trimesh | TexturedMesh:
    """A level written by mobile_lods: a ply with vertex colours, or a textured glb in the source's units."""
    if path.suffix == ".ply":
        return _load_input(path)
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:
        raise ReconstructionInputError(f"cannot read level {path}: {exc}") from None
    return from_trimesh(mesh) or mesh


# Measured on 2 busy CPU cores: an 82k-face vertex-coloured source -> 3 levels in 4.2 s; a 328k-face textured one
# -> 4 levels (atlases and bakes of 245k..24.5k faces, 2048/1024 px) in 308 s, peak RSS 1.56 GiB; with the shared
# unwrap and bake fill, bench/texture.py's 200k-face textured scan -> 4 levels (200k..24.5k faces) in 28 s.
@step(image="export", cpu="1", memory="3Gi", pool="cpu-optimized", timeout="30m")
def mobile_lods(
    models: In[Path],
    lods: Out[Path],
    levels: list[str] = ["preview", "reduced", "medium", "full"],  # noqa: B006 (pydantic copies defaults)
    max_texture_px: int = MAX_TEXTURE_PX,
) -> LodSummary:
    """Write one file per level (``lods/<level>.ply`` with vertex colours, or ``lods/<level>.glb`` with its own
    texture for a textured source) and ``lods/summary.json`` with face counts, errors, skipped levels (and the
    model's scale when it is known, for ``mobile_package``)."""
    if not 16 <= max_texture_px <= MAX_TEXTURE_PX:
        raise ReconstructionInputError(f"max_texture_px={max_texture_px} is outside 16..{MAX_TEXTURE_PX} "
                                       "(AR Quick Look's guidance caps textures at 2048 px)")
    src_path = find_model(Path(models))
    scale = _source_scale(src_path)
    raw = _load_input(src_path)
    texture = source_texture(raw)
    src = load_model(src_path)
    if texture is not None:  # the texture is baked per level; decimation sees the bare surface
        src = trimesh.Trimesh(src.vertices, src.faces, process=False)
    kept, skipped = plan_levels(list(levels), len(src.faces))
    diag = float(np.linalg.norm(src.extents)) or 1.0
    error = SurfaceDistance(src)
    rows = []
    with staged_dir(Path(lods)) as out:
        finer = src
        for name, target in reversed(kept):  # finest first: each level is decimated from the one above
            lod = finer = decimate(finer, target, colors_from=src)
            px = None
            if texture is not None:
                baked = bake(lod, raw, *texture, min(max_texture_px, LEVEL_TEXTURE_PX[name]))
                path, px = out / f"{name}.glb", baked.texture_px
                _write_textured_lod(path, baked, name)
            else:
                path = out / f"{name}.ply"
                lod.export(path, file_type="ply", encoding="binary")
                _check_lod(path, lod)
            hmax, hmean = error.to(lod)
            rows.insert(0, {"name": name, "cap": LEVELS[name], "file": path.name, "target_faces": target,
                            "faces": len(lod.faces), "vertices": len(lod.vertices), "bytes": path.stat().st_size,
                            "texture_px": px, "max_error": hmax / diag, "mean_error": hmean / diag})
        summary = LodSummary(
            source=src_path.name, source_faces=len(src.faces), levels=[r["name"] for r in rows],
            faces=[r["faces"] for r in rows], max_error=[round(r["max_error"], 6) for r in rows],
            mean_error=[round(r["mean_error"], 6) for r in rows], skipped=skipped,
            colors=src.visual.kind == "vertex", textured=texture is not None,
        )
        write_json(out / "summary.json", {**summary.model_dump(), "diagonal": diag, "lods": rows,
                                          "meters_per_unit": scale if scale > 0 else None})
    return summary


def _read_lods(lods: Path) -> list[dict]:
    """The rows of mobile_lods' summary.json, coarsest first, each file checked to exist."""
    lods = Path(lods)
    rows = level_table(lods, "lods", "LOD folder", "mobile_lods")
    for row in rows:
        if row.get("name") not in LEVELS or not (lods / str(row.get("file"))).is_file():
            raise ReconstructionInputError(f"LOD folder {lods}: level {row.get('name')!r} file "
                                           f"{row.get('file')!r} is missing or not a known level")
    return rows


def _pick(sizes: list[int], budget_kb: int, what: str, names: list[str]) -> int:
    """Index of the finest size within the budget (sizes coarsest first), or a MobileBudgetError naming the
    smallest size."""
    for i in reversed(range(len(sizes))):
        if sizes[i] <= budget_kb * 1024:
            return i
    j = int(np.argmin(sizes))
    raise MobileBudgetError(f"no level fits {what}_budget_kb={budget_kb}: the smallest {what} is {names[j]} at "
                            f"{sizes[j] / 1024:.1f} KB; raise the budget or add a coarser level to mobile_lods")


def _write_level(level: trimesh.Trimesh | TexturedMesh, out: Path, name: str, placement: Placement,
                 quantization_bits: int) -> dict:
    """Write ``levels/<name>.glb`` (Draco) and ``levels/<name>.usdz``, re-open both; their sizes."""
    textured = isinstance(level, TexturedMesh)
    mesh = to_trimesh(level) if textured else level
    texture = encoded(level) if textured else None  # the JPEG is encoded once for the glb and the usdz
    data = glb_bytes(mesh, placement, draco=True, quantization_bits=quantization_bits,
                     generator="kai-flows mobile_package", texture=texture, uv_bits=UV_BITS)
    plain = len(glb_bytes(mesh, placement, texture=texture))
    glb = f"levels/{name}.glb"
    check_glb_bytes(data, glb, mesh, draco=True)
    if textured and from_trimesh(trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")) is None:
        raise ExportCheckError(f"{glb} lost its texture")
    (out / glb).write_bytes(data)
    usdz = out / f"levels/{name}.usdz"
    write_usdz(mesh, usdz, placement, texture)
    check_file(usdz, mesh)  # re-opens and passes the ARKit compliance check
    px = level.texture_px if textured else None
    return {"name": name, "triangles": len(level.faces), "glb": glb, "glb_bytes": len(data),
            "usdz": f"levels/{name}.usdz", "usdz_bytes": usdz.stat().st_size, "texture_px": px,
            "compression_ratio": round(plain / len(data), 3),
            "ar_quick_look_ok": len(level.faces) <= AR_QUICK_LOOK["max_polygons"]
            and (px or 0) <= AR_QUICK_LOOK["max_texture_px"],
            "scene_viewer_ok": len(data) <= SCENE_VIEWER["max_bytes"]}


# Measured on 2 busy CPU cores: three vertex-coloured levels (82k, 49k, 24.5k faces) packaged in 2.1 s.
@step(image="export", cpu="1", memory="2Gi", pool="cpu-optimized", timeout="20m")
def mobile_package(
    lods: In[Path],
    package: Out[Path],
    glb_budget_kb: int = 2048,
    usdz_budget_kb: int = 4096,
    quantization_bits: int = 14,
    meters_per_unit: float = 0.0,
) -> PackageSummary:
    """Write ``package/levels/<level>.glb`` (Draco) and ``.usdz`` for every level, ``package/model.glb`` and
    ``package/model.usdz`` (the finest level within each budget) and ``package/summary.json`` with every level's
    sizes against AR Quick Look's and Scene Viewer's guidance. ``meters_per_unit``: the model's known scale (0:
    unknown, unless ``lods/summary.json`` records it)."""
    if glb_budget_kb <= 0 or usdz_budget_kb <= 0:
        raise ReconstructionInputError(f"budgets must be positive; got glb_budget_kb={glb_budget_kb}, "
                                       f"usdz_budget_kb={usdz_budget_kb}")
    if not 8 <= quantization_bits <= 24:
        raise ReconstructionInputError(f"quantization_bits={quantization_bits} is outside 8..24 "
                                       "(fewer bits visibly distort the shape; Draco stores at most 30)")
    found = _read_lods(Path(lods))
    scale = known_scale(Path(lods), meters_per_unit)
    levels = [(row["name"], _read_level(Path(lods) / row["file"])) for row in found]
    placement = place(levels[-1][1].vertices, scale)  # the finest level's: every level stands in the same place
    with staged_dir(Path(package)) as out:
        (out / "levels").mkdir()
        rows = [_write_level(level, out, name, placement, quantization_bits) for name, level in levels]
        g = _pick([r["glb_bytes"] for r in rows], glb_budget_kb, "glb", [Path(r["glb"]).name for r in rows])
        u = _pick([r["usdz_bytes"] for r in rows], usdz_budget_kb, "usdz", [Path(r["usdz"]).name for r in rows])
        shutil.copyfile(out / rows[g]["glb"], out / "model.glb")
        shutil.copyfile(out / rows[u]["usdz"], out / "model.usdz")
        summary = PackageSummary(
            glb_level=rows[g]["name"], glb_faces=rows[g]["triangles"], glb_bytes=rows[g]["glb_bytes"],
            usdz_level=rows[u]["name"], usdz_faces=rows[u]["triangles"], usdz_bytes=rows[u]["usdz_bytes"],
            compression_ratio=rows[g]["compression_ratio"], levels=[LevelSize(**r) for r in rows],
        )
        write_json(out / "summary.json", {**summary.model_dump(), "glb_budget_kb": glb_budget_kb,
                                          "usdz_budget_kb": usdz_budget_kb, "quantization_bits": quantization_bits,
                                          "guidance": {"ar_quick_look": AR_QUICK_LOOK, "scene_viewer": SCENE_VIEWER},
                                          "placement": placement.describe()})
    return summary
