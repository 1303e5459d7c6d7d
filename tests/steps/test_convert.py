"""convert: every format is written and re-opens with the same geometry; colours keep their meaning in each format
(sRGB in ply/obj, linear in glb COLOR_0 and usdz displayColor); glb and usdz carry a material, stand centred on the
ground, declare metres only for a known scale, and pass their validators."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.spatial
import trimesh

from kai_steps._colmap import ReconstructionInputError
from kai_steps._export import ExportCheckError, check_usdz, srgb_to_linear
from kai_steps._usd_check import arkit_rule_failures, usdz_compliance_failures
from kai_steps.convert import convert
from tests.steps.gltf_read import glb_chunks, primitive_arrays

# Where a scan lands in its SfM frame: off the origin and below it, like sceaux_castle (about 11 units away).
OFFSET = np.array([7.0, -3.5, 8.0])


def coloured_mesh(folder: Path, offset: np.ndarray = OFFSET, radius: float = 0.5) -> trimesh.Trimesh:
    """An icosphere (1.0 across) coloured by height (red top, blue bottom), moved to ``offset``, written as
    ``folder/mesh.ply``."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    top = m.vertices[:, 1] > 0
    colors = np.where(top[:, None], [220, 30, 30, 255], [30, 30, 220, 255]).astype(np.uint8)
    m.vertices += offset
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=colors)
    folder.mkdir(parents=True, exist_ok=True)
    m.export(folder / "mesh.ply")
    return m


def every_srgb_value_mesh(folder: Path) -> trimesh.Trimesh:
    """A 2,562-vertex sphere whose vertex colours run through every sRGB byte value in each channel."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    n = len(m.vertices)
    rgb = np.stack([np.arange(n) % 256, (np.arange(n) * 7 + 3) % 256, (255 - np.arange(n)) % 256], axis=1)
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=np.c_[rgb, np.full(n, 255)].astype(np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    m.export(folder / "mesh.ply")
    return m


def test_all_formats_reopen_with_the_same_mesh(tmp_path: Path) -> None:
    src = coloured_mesh(tmp_path / "mesh")
    s = convert(tmp_path / "mesh", tmp_path / "models")
    names = {f"model.{f}" for f in ("glb", "obj", "ply", "stl", "usdz")}
    assert set(s.files) == names and s.num_faces == len(src.faces)
    assert {p.name for p in (tmp_path / "models").iterdir()} == names | {"summary.json"}
    # ply/obj are the exchange copies: the mesh's own frame and sRGB colours, exactly
    for name in ("model.obj", "model.ply"):
        back = trimesh.load(tmp_path / "models" / name, process=False, force="mesh")
        assert len(back.faces) == len(src.faces) and len(back.vertices) == len(src.vertices), name
        np.testing.assert_allclose(back.bounds, src.bounds, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(back.visual.vertex_colors), src.visual.vertex_colors)
    stl = trimesh.load(tmp_path / "models" / "model.stl")
    assert len(stl.faces) == len(src.faces) and stl.is_watertight
    glb = trimesh.load(tmp_path / "models" / "model.glb", process=False, force="mesh")
    assert len(glb.faces) == len(src.faces) and len(glb.vertices) == len(src.vertices)


def test_colours_round_trip_as_linear_in_glb_and_usdz_and_srgb_in_ply(tmp_path: Path) -> None:
    from pxr import Usd, UsdGeom

    src = every_srgb_value_mesh(tmp_path / "mesh")
    srgb = np.asarray(src.visual.vertex_colors)[:, :3]
    convert(tmp_path / "mesh", tmp_path / "models", formats=["glb", "ply", "usdz"])
    convert(tmp_path / "mesh", tmp_path / "draco", formats=["glb"], draco=True)
    # IEC 61966-2-1 figures, independent of the code under test: sRGB 0.5 -> 0.21404, byte 10 -> 0.0030353
    # (linear segment), byte 200 -> 0.57758.
    expected = srgb_to_linear(srgb)
    assert expected[srgb == 10][0] == pytest.approx(10 / 255 / 12.92, abs=1e-9)
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.214041, abs=1e-6)
    assert expected[srgb == 200][0] == pytest.approx(0.577580, abs=1e-6)

    plain = primitive_arrays(tmp_path / "models" / "model.glb")
    np.testing.assert_allclose(plain["COLOR_0"], expected, atol=1e-7)  # float32: exact
    packed = primitive_arrays(tmp_path / "draco" / "model.glb")
    # Draco stores 8-bit linear and may reorder vertices: match each decoded vertex to its source by position.
    placement = json.loads((tmp_path / "draco" / "summary.json").read_text())["placement"]
    model_units = packed["POSITION"] / placement["meters_per_unit"] - np.array(placement["offset"])
    gap, idx = scipy.spatial.cKDTree(src.vertices).query(model_units)
    assert gap.max() < 1e-3
    np.testing.assert_allclose(packed["COLOR_0"], expected[idx], atol=0.5 / 255 + 1e-9)

    stage = Usd.Stage.Open(str(tmp_path / "models" / "model.usdz"))
    display = np.array(UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh")).GetDisplayColorPrimvar().Get())
    np.testing.assert_allclose(display, expected, atol=1e-7)

    ply = trimesh.load(tmp_path / "models" / "model.ply", process=False)
    np.testing.assert_array_equal(np.asarray(ply.visual.vertex_colors)[:, :3], srgb)  # PLY colours stay sRGB


@pytest.mark.parametrize("draco", [False, True])
def test_glb_has_a_matte_material_on_every_primitive_and_stands_on_the_ground(tmp_path: Path, draco: bool) -> None:
    src = coloured_mesh(tmp_path / "mesh")
    convert(tmp_path / "mesh", tmp_path / "models", formats=["glb"], draco=draco)
    gltf, _ = glb_chunks(tmp_path / "models" / "model.glb")
    primitives = [p for m in gltf["meshes"] for p in m["primitives"]]
    assert primitives and all("material" in p for p in primitives)
    for p in primitives:
        material = gltf["materials"][p["material"]]
        pbr = material["pbrMetallicRoughness"]
        assert pbr["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0] and pbr["metallicFactor"] == 0.0
        assert 0.8 <= pbr["roughnessFactor"] <= 1.0 and material["doubleSided"] is False
        assert "COLOR_0" in p["attributes"] and "NORMAL" in p["attributes"]
    pos = primitive_arrays(tmp_path / "models" / "model.glb")["POSITION"]
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    # unknown scale: 1 m across its largest side, centred on X/Z, lowest point on the ground
    assert (hi - lo).max() == pytest.approx(1.0, abs=2e-3)
    assert abs((lo[0] + hi[0]) / 2) < 2e-3 and abs((lo[2] + hi[2]) / 2) < 2e-3 and abs(lo[1]) < 2e-3
    extras = gltf["asset"]["extras"]["placement"]
    assert extras["units"] == "unknown" and "scale is unknown" in extras["note"]
    # the placement maps the source onto the delivered positions
    np.testing.assert_allclose((src.bounds + extras["offset"]) * extras["meters_per_unit"], [lo, hi], atol=2e-3)


def test_usdz_is_ar_ready_centred_on_the_ground_with_a_bound_material(tmp_path: Path) -> None:
    from pxr import Usd, UsdGeom, UsdShade

    src = coloured_mesh(tmp_path / "mesh")
    convert(tmp_path / "mesh", tmp_path / "models", formats=["usdz"])
    path = tmp_path / "models" / "model.usdz"
    assert usdz_compliance_failures(path) == []  # usd-core's validators and the ARKit rules
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))
    assert len(geom.GetPointsAttr().Get()) == len(src.vertices)
    assert list(geom.GetFaceVertexCountsAttr().Get()) == [3] * len(src.faces)
    box = UsdGeom.BBoxCache(Usd.TimeCode.Default(), [UsdGeom.Tokens.default_]).ComputeWorldBound(
        stage.GetDefaultPrim()).ComputeAlignedRange()
    lo, hi = np.array(box.GetMin()), np.array(box.GetMax())
    assert abs(lo[0] + hi[0]) < 1e-4 and abs(lo[2] + hi[2]) < 1e-4 and abs(lo[1]) < 1e-6
    # unknown scale: the points keep model units, metersPerUnit shows the model 1 m across, the layer says so
    mpu = UsdGeom.GetStageMetersPerUnit(stage)
    assert (hi - lo).max() * mpu == pytest.approx(1.0, rel=1e-4)
    data = stage.GetRootLayer().customLayerData
    assert data["kai:units"] == "unknown" and "scale is unknown" in data["kai:note"]
    # the material: a matte UsdPreviewSurface whose diffuse colour reads displayColor
    material, _ = UsdShade.MaterialBindingAPI(geom.GetPrim()).ComputeBoundMaterial()
    assert material and geom.GetPrim().HasAPI(UsdShade.MaterialBindingAPI)
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetShaderId() == "UsdPreviewSurface"
    assert surface.GetInput("metallic").Get() == 0.0 and 0.8 <= surface.GetInput("roughness").Get() <= 1.0
    reader = surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source
    assert UsdShade.Shader(reader.GetPrim()).GetShaderId() == "UsdPrimvarReader_float3"
    assert UsdShade.Shader(reader.GetPrim()).GetInput("varname").Get() == "displayColor"
    colors = np.array(geom.GetDisplayColorPrimvar().Get())
    assert colors.shape == (len(src.vertices), 3) and colors[:, 0].max() > 0.7 and colors[:, 2].max() > 0.7


def test_a_known_scale_is_declared_as_metres(tmp_path: Path) -> None:
    from pxr import Usd, UsdGeom

    coloured_mesh(tmp_path / "mesh", radius=2.0)  # 4 units across, each unit 0.25 m: 1 m
    convert(tmp_path / "mesh", tmp_path / "models", formats=["glb", "usdz"], meters_per_unit=0.25)
    stage = Usd.Stage.Open(str(tmp_path / "models" / "model.usdz"))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 0.25
    assert stage.GetRootLayer().customLayerData["kai:units"] == "metres"
    pos = primitive_arrays(tmp_path / "models" / "model.glb")["POSITION"]
    assert (pos.max(axis=0) - pos.min(axis=0)).max() == pytest.approx(1.0, abs=1e-3)
    assert json.loads((tmp_path / "models" / "summary.json").read_text())["meters_per_unit"] == 0.25
    # a scale recorded beside the mesh by the step that learnt it is used when the parameter is not given
    summary = tmp_path / "mesh" / "summary.json"
    summary.write_text(json.dumps({"meters_per_unit": 0.5}))
    convert(tmp_path / "mesh", tmp_path / "recorded", formats=["usdz"])
    assert UsdGeom.GetStageMetersPerUnit(Usd.Stage.Open(str(tmp_path / "recorded" / "model.usdz"))) == 0.5
    with pytest.raises(ReconstructionInputError, match=r"meters_per_unit=-1\.0 is negative"):
        convert(tmp_path / "mesh", tmp_path / "bad", meters_per_unit=-1.0)


def test_every_glb_passes_the_khronos_gltf_validator(tmp_path: Path, gltf_validator: Callable) -> None:
    coloured_mesh(tmp_path / "mesh")
    convert(tmp_path / "mesh", tmp_path / "plain", formats=["glb"])
    convert(tmp_path / "mesh", tmp_path / "draco", formats=["glb"], draco=True)
    glbs = [tmp_path / "plain" / "model.glb", tmp_path / "draco" / "model.glb"]
    reports = gltf_validator(*glbs)
    assert [reports[str(p)]["issues"]["numWarnings"] for p in glbs] == [0, 0]


def test_the_same_mesh_gives_the_same_bytes(tmp_path: Path) -> None:
    coloured_mesh(tmp_path / "mesh")
    for out, draco in (("a", False), ("b", False), ("c", True), ("d", True)):
        convert(tmp_path / "mesh", tmp_path / out, formats=["glb", "usdz"], draco=draco)
    for name in ("model.glb", "model.usdz", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "d" / name).read_bytes(), name


def test_draco_glb_is_smaller_and_reopens(tmp_path: Path) -> None:
    src = coloured_mesh(tmp_path / "mesh")
    plain = convert(tmp_path / "mesh", tmp_path / "plain", formats=["glb"])
    packed = convert(tmp_path / "mesh", tmp_path / "draco", formats=["GLB"], draco=True)
    assert packed.files["model.glb"] < 0.2 * plain.files["model.glb"]
    gltf, _ = glb_chunks(tmp_path / "draco" / "model.glb")
    assert gltf["extensionsRequired"] == ["KHR_draco_mesh_compression"]
    back = primitive_arrays(tmp_path / "draco" / "model.glb")
    assert len(back["indices"]) == len(src.faces) and back["COLOR_0"].shape[1] == 3  # no constant alpha
    np.testing.assert_allclose(back["POSITION"].min(axis=0), primitive_arrays(
        tmp_path / "plain" / "model.glb")["POSITION"].min(axis=0), atol=1e-3)


def test_a_usdz_that_fails_the_arkit_rules_is_named_with_the_rule(tmp_path: Path) -> None:
    from pxr import Sdf, Usd, UsdGeom, UsdShade, UsdUtils

    usda = tmp_path / "bad.usda"
    stage = Usd.Stage.CreateNew(str(usda))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Model")
    stage.SetDefaultPrim(root.GetPrim())
    UsdGeom.PointInstancer.Define(stage, "/Model/Instancer")
    shader = UsdShade.Shader.Define(stage, "/Model/Looks/Custom")
    shader.CreateIdAttr("MyRenderersSurface")
    stage.GetRootLayer().Save()
    bad = tmp_path / "bad.usdz"
    assert UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(usda)), str(bad))
    failures = "\n".join(usdz_compliance_failures(bad))
    assert "upAxis 'Z'" in failures and "fails 'ARKitPrimTypeChecker'" in failures
    assert "unsupported info:id 'MyRenderersSurface'" in failures and "does not have the .usdc extension" in failures
    one_line = r"^bad\.usdz fails the usdz ARKit compliance check: .+ \(and \d+ more\)$"
    with pytest.raises(ExportCheckError, match=one_line):
        check_usdz(bad)

    # the shader rules: a dangling connection and a texture format AR Quick Look cannot read
    stage = Usd.Stage.CreateInMemory()
    surface = UsdShade.Shader.Define(stage, "/Model/Looks/Material/Surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    dangling = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    dangling.GetAttr().AddConnection(Sdf.Path("/Model/Looks/Material/Missing.outputs:result"))
    texture = UsdShade.Shader.Define(stage, "/Model/Looks/Material/Texture")
    texture.CreateIdAttr("UsdUVTexture")
    texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set("albedo.tga")
    failures = "\n".join(arkit_rule_failures(stage, tmp_path / "in-memory.usdc"))
    assert "Connection source </Model/Looks/Material/Missing.outputs:result> for shader input" in failures
    assert "@albedo.tga@ has non-portable file format (fails 'TextureChecker')" in failures


def test_unknown_format_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    coloured_mesh(tmp_path / "mesh")
    with pytest.raises(ReconstructionInputError, match=r"unknown model format\(s\) 'fbx'.*supported: glb"):
        convert(tmp_path / "mesh", tmp_path / "models", formats=["glb", "fbx"])
    assert not (tmp_path / "models").exists()


def test_mesh_without_faces_or_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconstructionInputError, match="mesh input .*mesh.ply does not exist"):
        convert(tmp_path / "empty", tmp_path / "models")
    (tmp_path / "points").mkdir()
    trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(tmp_path / "points" / "mesh.ply")
    with pytest.raises(ReconstructionInputError, match="has no faces|cannot read mesh"):
        convert(tmp_path / "points", tmp_path / "models")
    assert not (tmp_path / "models").exists()


def textured_mesh_folder(folder: Path) -> trimesh.Trimesh:
    """A 1,280-face sphere with a 256 x 256 texture (red top half, blue bottom half) and UVs from its latitude,
    written as the texture step writes it: ``folder/mesh.obj`` + mtl + png."""
    from kai_steps.texture import textured_mesh

    m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    m.vertices += OFFSET
    lat = (m.vertices[:, 1] - OFFSET[1] + 0.5)  # 0 at the bottom, 1 at the top
    uv = np.stack([np.full(len(m.vertices), 0.5), 1.0 - lat], axis=1)[m.faces]  # glTF convention, v down
    image = np.zeros((256, 256, 3), np.uint8)
    image[:128] = (220, 30, 30)
    image[128:] = (30, 30, 220)
    out = textured_mesh(m.vertices, m.faces, m.vertex_normals, uv, image)
    folder.mkdir(parents=True, exist_ok=True)
    out.export(folder / "mesh.obj", file_type="obj", include_normals=True)
    return out


def test_a_textured_mesh_keeps_its_texture_in_every_format(tmp_path: Path, gltf_validator: Callable) -> None:
    from pxr import Usd, UsdGeom

    src = textured_mesh_folder(tmp_path / "mesh")
    s = convert(tmp_path / "mesh", tmp_path / "a")
    convert(tmp_path / "mesh", tmp_path / "b", formats=["glb", "usdz"])
    convert(tmp_path / "mesh", tmp_path / "draco", formats=["glb"], draco=True)
    assert s.textured and s.num_faces == 1280
    assert set(s.files) == {f"model.{f}" for f in ("glb", "obj", "mtl", "png", "ply", "stl", "usdz")}
    reports = gltf_validator(tmp_path / "a" / "model.glb", tmp_path / "draco" / "model.glb")
    assert reports[str(tmp_path / "a" / "model.glb")]["issues"]["numWarnings"] == 0
    gltf, _ = glb_chunks(tmp_path / "a" / "model.glb")
    assert gltf["images"][0]["mimeType"] == "image/png" and gltf["textures"] == [{"sampler": 0, "source": 0}]
    # the top of the sphere reads the red half of the texture: glTF's v runs down the image
    glb = primitive_arrays(tmp_path / "a" / "model.glb")
    top = glb["POSITION"][:, 1] > glb["POSITION"][:, 1].max() - 0.1
    assert (glb["TEXCOORD_0"][top, 1] < 0.5).all() and "COLOR_0" not in glb
    draco = primitive_arrays(tmp_path / "draco" / "model.glb")
    top = draco["POSITION"][:, 1] > draco["POSITION"][:, 1].max() - 0.1
    assert (draco["TEXCOORD_0"][top, 1] < 0.5).all()
    # obj re-opens with its texture; the ply carries the texture's colours per vertex, seams merged back
    obj = trimesh.load(tmp_path / "a" / "model.obj", process=False, force="mesh")
    assert obj.visual.kind == "texture" and obj.visual.material.image.size == (256, 256)
    ply = trimesh.load(tmp_path / "a" / "model.ply", process=False)
    colours = np.asarray(ply.visual.vertex_colors)[:, :3].astype(int)
    high = ply.vertices[:, 1] > OFFSET[1] + 0.2
    low = ply.vertices[:, 1] < OFFSET[1] - 0.2
    assert (colours[high, 0] > 200).all() and (colours[low, 2] > 200).all()
    assert len(ply.vertices) == 642 and len(src.vertices) >= 642
    # usdz: st primvar read by a UsdUVTexture; ARKit-clean (convert checks it); same bytes every time
    stage = Usd.Stage.Open(str(tmp_path / "a" / "model.usdz"))
    st = UsdGeom.PrimvarsAPI(stage.GetPrimAtPath("/Model/Mesh")).GetPrimvar("st")
    np.testing.assert_allclose(np.array(st.Get()), src.visual.uv, atol=1e-6)
    for name in ("model.glb", "model.usdz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
