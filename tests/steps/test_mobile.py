"""mobile_lods / mobile_package on a generated scan-like coloured mesh (81,920 faces): LODs, Draco glb, budgets;
every glb and usdz placed alike, with linear colours and a material, and passing its validator."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.spatial
import trimesh
from PIL import Image

from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import linear_to_srgb
from kai_steps._mobile_lod import LEVELS, MIN_LEVEL_STEP, find_model, plan_levels
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


@pytest.mark.parametrize(("faces", "finest"), [(100_000, "medium"), (130_000, "full")])
def test_a_level_nearly_the_size_of_the_one_below_is_skipped(faces: int, finest: str) -> None:
    """A standard-tier textured model has 100k faces: "full" (the source whole) would be "medium" (98k) again."""
    kept, skipped = plan_levels(list(LEVELS), faces)
    assert [name for name, _ in kept][-1] == finest
    for (_, coarser), (_, finer) in itertools.pairwise(kept):
        assert finer >= MIN_LEVEL_STEP * coarser
    if finest == "medium":
        assert list(skipped) == ["full"] and "nearly the same model" in skipped["full"]
    else:
        assert skipped == {} and kept[-1][1] == faces


def test_levels_are_named_capped_and_skipped_when_the_source_is_too_small(built: dict) -> None:
    s, folder = built["lods"], built["root"] / "lods"
    assert s.source == "model.ply" and s.source_faces == SOURCE_FACES and s.colors and not s.textured
    # 81,920 faces: preview and reduced are decimated under their caps, medium is the source whole, full skipped
    assert s.levels == ["preview", "reduced", "medium"] and list(s.skipped) == ["full"]
    assert "medium already holds whole" in s.skipped["full"]
    assert 24_000 < s.faces[0] < 25_000 and 48_000 < s.faces[1] < 50_000 and s.faces[2] == SOURCE_FACES
    assert {p.name for p in folder.iterdir()} == {"preview.ply", "reduced.ply", "medium.ply", "summary.json"}
    for name, faces in zip(s.levels, s.faces, strict=True):
        lod = trimesh.load(folder / f"{name}.ply", process=False)
        assert len(lod.faces) == faces < LEVELS[name] and lod.visual.kind == "vertex"
        assert _red_top_blue_bottom(lod, np.asarray(lod.visual.vertex_colors)), f"{name} colours"
    # the source level scores 0; coarser levels stray further but stay close (fractions of the 1.73 diagonal)
    assert s.max_error[2] == 0.0 and s.mean_error[2] == 0.0
    assert 0 < s.mean_error[1] < s.mean_error[0] < s.max_error[0] < 0.02
    on_disk = json.loads((folder / "summary.json").read_text())
    assert [r["faces"] for r in on_disk["lods"]] == s.faces and on_disk["skipped"] == s.skipped


def test_a_small_source_keeps_its_coarsest_level_and_a_glb_input_is_read(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    small = trimesh.creation.icosphere(subdivisions=3)
    small.visual = trimesh.visual.ColorVisuals(small, vertex_colors=np.tile([200, 30, 30, 255], (642, 1)))
    trimesh.Scene(small).export(tmp_path / "models" / "scan.glb")
    s = mobile_lods(tmp_path / "models", tmp_path / "lods")
    assert s.source == "scan.glb" and s.colors and s.levels == ["preview"] and s.faces == [1280]
    assert list(s.skipped) == ["reduced", "medium", "full"]
    # the coarsest level asked for always exists
    s = mobile_lods(tmp_path / "models", tmp_path / "full", levels=["full", "medium"])
    assert s.levels == ["medium"] and list(s.skipped) == ["full"]


def test_package_ships_every_level_sized_against_the_viewers_guidance(built: dict) -> None:
    p, folder, src = built["package"], built["root"] / "package", built["src"]
    names = ["preview", "reduced", "medium"]
    assert {str(x.relative_to(folder)) for x in folder.rglob("*")} == {
        "model.glb", "model.usdz", "summary.json", "levels",
        *(f"levels/{n}.{ext}" for n in names for ext in ("glb", "usdz"))}
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["guidance"] == {"ar_quick_look": {"max_polygons": 100_000, "max_texture_px": 2048},
                                   "scene_viewer": {"max_bytes": 10_000_000}}
    assert [lv.name for lv in p.levels] == names and on_disk["levels"] == [lv.model_dump() for lv in p.levels]
    for lv, faces in zip(p.levels, built["lods"].faces, strict=True):
        assert lv.triangles == faces and lv.texture_px is None
        assert (folder / lv.glb).stat().st_size == lv.glb_bytes and (folder / lv.usdz).stat().st_size == lv.usdz_bytes
        assert lv.ar_quick_look_ok and lv.scene_viewer_ok and lv.compression_ratio > 5
        assert len(trimesh.load(folder / lv.glb, force="mesh").faces) == faces
    # default budgets (2 MB glb, 4 MB usdz) fit the finest level
    assert p.glb_level == "medium" and p.usdz_level == "medium" and p.glb_faces == SOURCE_FACES
    data = (folder / "model.glb").read_bytes()
    assert data == (folder / "levels" / "medium.glb").read_bytes() and len(data) == p.glb_bytes <= 2048 * 1024
    assert b"KHR_draco_mesh_compression" in data
    plain = trimesh.Scene(src).export(file_type="glb")  # even without normals, the plain glb is far bigger
    assert len(data) < len(plain) / 5 and p.compression_ratio > 5
    back = primitive_arrays(folder / "model.glb")
    assert len(back["indices"]) == SOURCE_FACES and back["COLOR_0"].shape[1] == 3  # no constant alpha channel
    # placed: unknown scale, so 1 m across, centred on X/Z, on the ground; the placement maps the source onto it
    placement = on_disk["placement"]
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


def test_every_level_has_a_material_stands_in_one_place_and_passes_the_gltf_validator(
        built: dict, gltf_validator: Callable) -> None:
    folder = built["root"] / "package"
    glbs = [folder / "model.glb", *sorted((folder / "levels").glob("*.glb"))]
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


def test_usdz_is_the_finest_level_within_budget(built: dict) -> None:
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


def test_tighter_budgets_pick_coarser_levels(built: dict, tmp_path: Path) -> None:
    rows = {lv.name: lv for lv in built["package"].levels}
    glb_kb = rows["preview"].glb_bytes // 1024 + 1  # preview fits, the others do not
    usdz_kb = rows["reduced"].usdz_bytes // 1024 + 1  # reduced fits, medium does not
    assert rows["medium"].glb_bytes > glb_kb * 1024 and rows["reduced"].glb_bytes > glb_kb * 1024
    p = mobile_package(built["root"] / "lods", tmp_path / "package", glb_budget_kb=glb_kb, usdz_budget_kb=usdz_kb)
    assert p.glb_level == "preview" and p.glb_bytes <= glb_kb * 1024 and p.glb_faces == built["lods"].faces[0]
    out = tmp_path / "package"
    assert (out / "model.glb").read_bytes() == (out / "levels" / "preview.glb").read_bytes()
    assert p.usdz_level == "reduced" and p.usdz_bytes <= usdz_kb * 1024


@pytest.mark.parametrize("budget", ["glb_budget_kb", "usdz_budget_kb"])
def test_a_budget_no_level_fits_fails_naming_the_smallest_size(built: dict, tmp_path: Path, budget: str) -> None:
    kind = budget.split("_")[0]
    smallest = min(built["package"].levels, key=lambda lv: getattr(lv, f"{kind}_bytes"))
    with pytest.raises(MobileBudgetError, match=rf"no level fits {budget}=5: the smallest {kind} is "
                                                rf"{smallest.name}\.{kind} at \d+\.\d KB") as err:
        mobile_package(built["root"] / "lods", tmp_path / "package", **{budget: 5})
    assert f"{getattr(smallest, f'{kind}_bytes') / 1024:.1f} KB" in str(err.value)
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
    with pytest.raises(ReconstructionInputError, match=r"unknown level name\(s\) 'lod0'; known: preview, reduced, "
                                                       r"medium, full"):
        mobile_lods(tmp_path / "ok.ply", tmp_path / "lods", levels=["preview", "lod0"])
    with pytest.raises(ReconstructionInputError, match=r"levels is empty"):
        mobile_lods(tmp_path / "ok.ply", tmp_path / "lods", levels=[])
    with pytest.raises(ReconstructionInputError, match=r"max_texture_px=4096 is outside 16\.\.2048"):
        mobile_lods(tmp_path / "ok.ply", tmp_path / "lods", max_texture_px=4096)
    with pytest.raises(ReconstructionInputError, match="LOD folder .*empty holds no summary.json"):
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
    lods = mobile_lods(tmp_path / "models", tmp_path / "lods", levels=["preview"])
    assert lods.source == "model.ply"
    mobile_package(tmp_path / "lods", tmp_path / "package")
    stage = Usd.Stage.Open(str(tmp_path / "package" / "model.usdz"))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 0.5
    pos = primitive_arrays(tmp_path / "package" / "model.glb")["POSITION"]
    units = trimesh.load(tmp_path / "lods" / "preview.ply", process=False).extents.max()
    assert (pos.max(axis=0) - pos.min(axis=0)).max() == pytest.approx(0.5 * units, rel=1e-3)  # 0.5 m per unit
    # the glb path: already in metres, and its linear COLOR_0 read back as the source's sRGB colours
    glb_lods = mobile_lods(tmp_path / "models" / "model.glb", tmp_path / "glb_lods", levels=["medium"])
    assert glb_lods.colors
    assert json.loads((tmp_path / "glb_lods" / "summary.json").read_text())["meters_per_unit"] == 1.0
    lod = trimesh.load(tmp_path / "glb_lods" / "medium.ply", process=False)
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
    s = mobile_lods(tmp_path / "scan.ply", tmp_path / "lods", levels=["preview", "medium"])
    assert len(border) > 300 and s.faces[0] < len(m.faces) / 2
    for name in s.levels:
        lod = trimesh.load(tmp_path / "lods" / f"{name}.ply", process=False)
        # every border vertex is still there, where it was, and still on the border
        gap, _ = scipy.spatial.cKDTree(_border_vertices(lod)).query(border)
        assert gap.max() < 1e-6, f"{name} moved its open border by up to {gap.max():.4f}"


def textured_sphere(subdivisions: int = 4) -> trimesh.Trimesh:
    """An icosphere with spherical UVs and a generated texture: red above the equator, blue below."""
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    v = m.vertices / 0.5
    uv = np.column_stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5,
                          0.5 + np.arcsin(np.clip(v[:, 1], -1, 1)) / np.pi])
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    image[:32], image[32:] = [220, 30, 30], [30, 30, 220]  # image rows run down: the top rows are V near 1
    m.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(image))
    return m


def test_a_textured_source_keeps_a_baked_texture_in_every_level(tmp_path: Path, gltf_validator: Callable) -> None:
    from pxr import Usd, UsdShade

    textured_sphere().export(tmp_path / "model.glb")
    s = mobile_lods(tmp_path / "model.glb", tmp_path / "lods", max_texture_px=128)
    assert s.textured and not s.colors and s.levels == ["preview"] and s.faces == [5120]
    p = mobile_package(tmp_path / "lods", tmp_path / "package")
    folder = tmp_path / "package"
    gltf_validator(*[folder / lv.glb for lv in p.levels], folder / "model.glb")
    for lv in p.levels:
        assert lv.texture_px is not None and 64 <= lv.texture_px <= 128 and lv.ar_quick_look_ok
        gltf, _ = glb_chunks(folder / lv.glb)
        assert gltf["images"][0]["mimeType"] == "image/jpeg"
        assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0, "texCoord": 0}
        back = primitive_arrays(folder / lv.glb)
        assert len(back["indices"]) == lv.triangles and back["TEXCOORD_0"].shape[1] == 2
        # the baked texture puts the source's colours where they were: red on top, blue below
        mesh = trimesh.load(folder / lv.glb, force="mesh")
        rgb = np.asarray(mesh.visual.to_color().vertex_colors)[:, :3].astype(int)
        y = mesh.vertices[:, 1]
        mid = (y.max() + y.min()) / 2
        assert (rgb[y > mid + 0.05, 0] > 180).all() and (rgb[y < mid - 0.05, 2] > 180).all()
        usdz = folder / lv.usdz
        assert usdz_compliance_failures(usdz) == []  # usd-core's validators and the ARKit rules
        stage = Usd.Stage.Open(str(usdz))
        shaders = {UsdShade.Shader(pr).GetIdAttr().Get(): pr for pr in stage.Traverse() if pr.IsA(UsdShade.Shader)}
        assert "UsdUVTexture" in shaders
        assert str(UsdShade.Shader(shaders["UsdUVTexture"]).GetInput("file").Get().path).endswith(".jpg")


def test_the_textured_model_of_a_convert_folder_is_the_one_read(tmp_path: Path) -> None:
    from kai_steps.convert import convert

    (tmp_path / "mesh").mkdir()
    textured_sphere(2).export(tmp_path / "mesh" / "mesh.obj")  # as the texture step writes it: obj + mtl + image
    convert(tmp_path / "mesh", tmp_path / "models", formats=["ply", "obj", "glb"])
    # the ply's colours were sampled from the texture at its vertices; the obj keeps the texture and the frame
    assert find_model(tmp_path / "models").name == "model.obj"
    (tmp_path / "models" / "model.obj").unlink()
    assert find_model(tmp_path / "models").name == "model.glb"
