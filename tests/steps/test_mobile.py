"""mobile_lods / mobile_package on a generated scan-like coloured mesh (81,920 faces): LODs, Draco glb, budgets;
every glb and usdz placed alike, with linear colours and a material, and passing its validator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.spatial
import trimesh

from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import linear_to_srgb
from kai_steps._usd_check import usdz_compliance_failures
from kai_steps.mobile import MobileBudgetError, mobile_lods, mobile_package
from tests.steps.gltf_read import glb_chunks, primitive_arrays

SOURCE_FACES = 81920


def scan_like_mesh() -> trimesh.Trimesh:
    """A bumpy sphere (seeded radial noise, like a scan) coloured red on top and blue below."""
    m = trimesh.creation.icosphere(subdivisions=5, radius=0.5).subdivide()
    rng = np.random.default_rng(0)
    m.vertices *= (1 + 0.01 * rng.standard_normal(len(m.vertices)))[:, None]
    top = m.vertices[:, 1] > 0
    colors = np.where(top[:, None], [220, 30, 30, 255], [30, 30, 220, 255]).astype(np.uint8)
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=colors)
    return m


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mobile")
    (root / "models").mkdir()
    src = scan_like_mesh()
    src.export(root / "models" / "model.ply")
    # convert's folder also holds an uncoloured obj and a summary: the coloured ply must be the one read
    trimesh.Trimesh(src.vertices, src.faces).export(root / "models" / "model.obj")
    (root / "models" / "summary.json").write_text("{}")
    lods = mobile_lods(root / "models", root / "lods")
    package = mobile_package(root / "lods", root / "package")
    return {"root": root, "src": src, "lods": lods, "package": package}


def _red_top_blue_bottom(mesh: trimesh.Trimesh, colors: np.ndarray) -> bool:
    y = mesh.vertices[:, 1]
    rgb = colors[:, :3].astype(int)
    return bool((rgb[y > 0.05, 0] > 200).all() and (rgb[y < -0.05, 2] > 200).all())


def test_lods_have_the_asked_face_counts_colours_and_growing_error(built: dict) -> None:
    s, folder = built["lods"], built["root"] / "lods"
    assert s.source == "model.ply" and s.source_faces == SOURCE_FACES and s.colors
    expected = [SOURCE_FACES, SOURCE_FACES // 2, SOURCE_FACES // 4, SOURCE_FACES // 10]
    assert s.faces == pytest.approx(expected, rel=0.01)
    assert {p.name for p in folder.iterdir()} == {"lod0.ply", "lod1.ply", "lod2.ply", "lod3.ply", "summary.json"}
    for i, faces in enumerate(s.faces):
        lod = trimesh.load(folder / f"lod{i}.ply", process=False)
        assert len(lod.faces) == faces and lod.visual.kind == "vertex"
        assert _red_top_blue_bottom(lod, np.asarray(lod.visual.vertex_colors)), f"lod{i} colours"
    # lod0 is the source itself; coarser LODs stray further on average but stay close (errors are fractions of
    # the 1.73 bounding-box diagonal; the sampled maximum is noisy, so only its bound and trend are checked)
    assert s.max_error[0] == 0.0 and s.mean_error[0] == 0.0
    assert 0 < s.mean_error[1] < s.mean_error[2] < s.mean_error[3] < s.max_error[3] < 0.02
    assert s.max_error[1] < s.max_error[3]
    on_disk = json.loads((folder / "summary.json").read_text())
    assert [r["faces"] for r in on_disk["lods"]] == s.faces


def test_max_faces_caps_the_finest_lod_and_a_glb_input_is_read(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    trimesh.Scene(scan_like_mesh()).export(tmp_path / "models" / "scan.glb")
    s = mobile_lods(tmp_path / "models", tmp_path / "lods", levels=[0.5, 1.0], max_faces=10000)
    assert s.source == "scan.glb" and s.colors
    assert s.faces == pytest.approx([10000, 5000], rel=0.01)  # levels are fractions of the capped finest LOD
    lod = trimesh.load(tmp_path / "lods" / "lod1.ply", process=False)
    assert _red_top_blue_bottom(lod, np.asarray(lod.visual.vertex_colors))


def test_package_ships_a_smaller_draco_glb_that_loads_back(built: dict) -> None:
    p, folder, src = built["package"], built["root"] / "package", built["src"]
    assert {str(x.relative_to(folder)) for x in folder.rglob("*")} == {
        "model.glb", "model.usdz", "summary.json", "lods", *(f"lods/lod{i}.glb" for i in range(4))}
    # default budgets (2 MB glb, 4 MB usdz) fit the finest LOD
    assert p.glb_lod == 0 and p.usdz_lod == 0 and p.glb_faces == SOURCE_FACES
    data = (folder / "model.glb").read_bytes()
    assert b"KHR_draco_mesh_compression" in data and len(data) == p.glb_bytes <= 2048 * 1024
    plain = trimesh.Scene(src).export(file_type="glb")  # even without normals, the plain glb is far bigger
    assert len(data) < len(plain) / 5 and p.compression_ratio > 5
    back = primitive_arrays(folder / "model.glb")
    assert len(back["indices"]) == SOURCE_FACES and back["COLOR_0"].shape[1] == 3  # no constant alpha channel
    # placed: unknown scale, so 1 m across, centred on X/Z, on the ground; the placement maps the source onto it
    placement = json.loads((folder / "summary.json").read_text())["placement"]
    assert placement["units"] == "unknown"
    model_units = back["POSITION"] / placement["meters_per_unit"] - np.array(placement["offset"])
    np.testing.assert_allclose([model_units.min(axis=0), model_units.max(axis=0)], src.bounds, atol=1e-3)
    lo, hi = back["POSITION"].min(axis=0), back["POSITION"].max(axis=0)
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-3) and abs(lo[1]) < 1e-3
    assert abs(lo[0] + hi[0]) < 2e-3 and abs(lo[2] + hi[2]) < 2e-3
    # COLOR_0 is linear: back to sRGB it is the source's red top and blue bottom
    srgb = np.round(linear_to_srgb(back["COLOR_0"]) * 255)
    y = model_units[:, 1]
    assert (srgb[y > 0.05, 0] >= 218).all() and (srgb[y < -0.05, 2] >= 218).all()
    for i, faces in enumerate(built["lods"].faces):
        lod = trimesh.load(folder / "lods" / f"lod{i}.glb", force="mesh")
        assert len(lod.faces) == faces


def test_every_level_has_a_material_stands_in_one_place_and_passes_the_gltf_validator(
        built: dict, gltf_validator: Callable) -> None:
    folder = built["root"] / "package"
    glbs = [folder / "model.glb", *sorted((folder / "lods").glob("lod*.glb"))]
    gltf_validator(*glbs)
    offsets = set()
    for path in glbs:
        gltf, _ = glb_chunks(path)
        primitives = [pr for m in gltf["meshes"] for pr in m["primitives"]]
        assert primitives and all("material" in pr for pr in primitives), path.name
        material = gltf["materials"][primitives[0]["material"]]
        assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0 and material["doubleSided"] is False
        offsets.add(json.dumps(gltf["asset"]["extras"]["placement"]))
    assert len(offsets) == 1  # switching levels does not move the model


def test_usdz_is_the_finest_lod_within_budget(built: dict) -> None:
    from pxr import Usd, UsdGeom, UsdShade

    p, folder = built["package"], built["root"] / "package"
    assert (folder / "model.usdz").stat().st_size == p.usdz_bytes <= 4096 * 1024
    assert usdz_compliance_failures(folder / "model.usdz") == []
    stage = Usd.Stage.Open(str(folder / "model.usdz"))
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))
    assert len(geom.GetFaceVertexCountsAttr().Get()) == p.usdz_faces == SOURCE_FACES
    assert len(geom.GetDisplayColorPrimvar().Get()) == len(geom.GetPointsAttr().Get())
    assert UsdShade.MaterialBindingAPI(geom.GetPrim()).ComputeBoundMaterial()[0]
    points = np.array(geom.GetPointsAttr().Get())
    lo, hi = points.min(axis=0), points.max(axis=0)
    assert abs(lo[1]) < 1e-6 and abs(lo[0] + hi[0]) < 1e-4 and abs(lo[2] + hi[2]) < 1e-4


def test_tighter_budgets_pick_coarser_lods(built: dict, tmp_path: Path) -> None:
    rows = json.loads((built["root"] / "package" / "summary.json").read_text())["lods"]
    glb_kb = rows[1]["glb_bytes"] // 1024 + 1  # lod1 fits, lod0 does not
    usdz_kb = rows[0]["usdz_bytes"] // 1024 - 1  # lod0's usdz just misses
    assert rows[0]["glb_bytes"] > glb_kb * 1024
    p = mobile_package(built["root"] / "lods", tmp_path / "package", glb_budget_kb=glb_kb, usdz_budget_kb=usdz_kb)
    assert p.glb_lod == 1 and p.glb_bytes <= glb_kb * 1024 and p.glb_faces == built["lods"].faces[1]
    out = tmp_path / "package"
    assert (out / "model.glb").read_bytes() == (out / "lods" / "lod1.glb").read_bytes()
    assert p.usdz_lod == 1 and p.usdz_bytes <= usdz_kb * 1024


@pytest.mark.parametrize("budget", ["glb_budget_kb", "usdz_budget_kb"])
def test_a_budget_no_lod_fits_fails_naming_the_smallest_size(built: dict, tmp_path: Path, budget: str) -> None:
    rows = json.loads((built["root"] / "package" / "summary.json").read_text())["lods"]
    kind = budget.split("_")[0]
    smallest = min(r["glb_bytes"] for r in rows) / 1024 if kind == "glb" else None
    with pytest.raises(MobileBudgetError, match=rf"no LOD fits {budget}=5: the smallest {kind} is lod3\.{kind} at "
                                                r"\d+\.\d KB") as err:
        mobile_package(built["root"] / "lods", tmp_path / "package", **{budget: 5})
    if smallest is not None:
        assert f"{smallest:.1f} KB" in str(err.value)
    assert not (tmp_path / "package").exists() and not any(tmp_path.iterdir())  # nothing half-published


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconstructionInputError, match=r"model folder .*empty holds no \.ply, \.glb, \.obj mesh"):
        mobile_lods(tmp_path / "empty", tmp_path / "lods")
    with pytest.raises(ReconstructionInputError, match=r"model input .*missing does not exist"):
        mobile_lods(tmp_path / "missing", tmp_path / "lods")
    trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(tmp_path / "points.ply")
    with pytest.raises(ReconstructionInputError, match=r"mesh .*points\.ply has no faces"):
        mobile_lods(tmp_path / "points.ply", tmp_path / "lods")
    (tmp_path / "garbage.obj").write_text("this is not a mesh\n")
    with pytest.raises(ReconstructionInputError, match=r"garbage\.obj"):
        mobile_lods(tmp_path / "garbage.obj", tmp_path / "lods")
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "ok.ply")
    with pytest.raises(ReconstructionInputError, match=r"levels must lie in \(0, 1\]; got \[1\.5\]"):
        mobile_lods(tmp_path / "ok.ply", tmp_path / "lods", levels=[1.0, 1.5])
    with pytest.raises(ReconstructionInputError, match="LOD folder .*empty holds no lod<N>.ply"):
        mobile_package(tmp_path / "empty", tmp_path / "package")
    with pytest.raises(ReconstructionInputError, match=r"quantization_bits=4 is outside 8\.\.24"):
        mobile_package(tmp_path / "empty", tmp_path / "package", quantization_bits=4)
    assert not (tmp_path / "lods").exists() and not (tmp_path / "package").exists()


def test_a_known_scale_reaches_the_package_and_a_glb_source_keeps_its_colours(tmp_path: Path) -> None:
    from pxr import Usd, UsdGeom

    from kai_steps.convert import convert

    src = scan_like_mesh()
    src.vertices += [5.0, -2.0, 9.0]
    (tmp_path / "mesh").mkdir()
    src.export(tmp_path / "mesh" / "mesh.ply")
    # the ply path: convert records the scale beside the ply, mobile_lods passes it on, mobile_package declares it
    convert(tmp_path / "mesh", tmp_path / "models", formats=["ply", "glb"], meters_per_unit=0.5)
    lods = mobile_lods(tmp_path / "models", tmp_path / "lods", levels=[0.1])
    assert lods.source == "model.ply"
    mobile_package(tmp_path / "lods", tmp_path / "package")
    stage = Usd.Stage.Open(str(tmp_path / "package" / "model.usdz"))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 0.5
    pos = primitive_arrays(tmp_path / "package" / "model.glb")["POSITION"]
    assert (pos.max(axis=0) - pos.min(axis=0)).max() == pytest.approx(0.5, rel=0.01)  # 1 unit across = 0.5 m
    # the glb path: already in metres, and its linear COLOR_0 read back as the source's sRGB colours
    glb_lods = mobile_lods(tmp_path / "models" / "model.glb", tmp_path / "glb_lods", levels=[1.0])
    assert glb_lods.colors
    assert json.loads((tmp_path / "glb_lods" / "summary.json").read_text())["meters_per_unit"] == 1.0
    lod = trimesh.load(tmp_path / "glb_lods" / "lod0.ply", process=False)
    # trimesh reads COLOR_0 as 8-bit: sRGB 30 becomes linear byte 3 or 4, i.e. 28 or 31 back in sRGB
    diff = np.abs(np.asarray(lod.visual.vertex_colors).astype(int) - np.asarray(src.visual.vertex_colors))
    assert diff.max() <= 2


def _border_vertices(mesh: trimesh.Trimesh) -> np.ndarray:
    edges = mesh.edges_sorted[trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)]
    return mesh.vertices[np.unique(edges)]


def test_lods_keep_the_open_border_of_a_scan(tmp_path: Path) -> None:
    # A scan stops somewhere (the ground, a hole): the sphere with its lower quarter cut away has one open border.
    m = scan_like_mesh()
    m.update_faces(m.vertices[m.faces][:, :, 1].min(axis=1) > -0.25)
    m.remove_unreferenced_vertices()
    m.export(tmp_path / "scan.ply")
    border = _border_vertices(m)
    s = mobile_lods(tmp_path / "scan.ply", tmp_path / "lods")
    assert len(border) > 300 and s.faces[-1] < len(m.faces) / 9
    for i in range(len(s.faces)):
        lod = trimesh.load(tmp_path / "lods" / f"lod{i}.ply", process=False)
        # every border vertex is still there, where it was, and still on the border
        gap, _ = scipy.spatial.cKDTree(_border_vertices(lod)).query(border)
        assert gap.max() < 1e-6, f"lod{i} moved its open border by up to {gap.max():.4f}"
