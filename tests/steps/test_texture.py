"""texture: the baked texture reproduces the photos (held-out views beat vertex colours), hidden faces take no
colour, bad inputs are named, and convert carries the texture into glb, obj, usdz (and colours into the ply)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import trimesh
from PIL import Image

from kai_steps._colmap import ReconstructionInputError, strecha_model
from kai_steps._metrics import StrechaCamera, write_strecha_camera
from kai_steps._texture import PinholeView, bake, rasterize, unwrap
from kai_steps.convert import convert
from kai_steps.sample_scene import _LIGHT, _render
from kai_steps.texture import texture
from tests.steps.gltf_read import glb_chunks, primitive_arrays

W, H = 240, 180


def _camera(az_deg: float, el_deg: float, r: float = 2.2) -> StrechaCamera:
    f = 0.9 * W
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    az, el = np.radians(az_deg), np.radians(el_deg)
    C = r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    z = -C / np.linalg.norm(C)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    return StrechaCamera(K, np.column_stack([x, np.cross(z, x), z]), C, W, H)


def _waves(points: np.ndarray) -> np.ndarray:
    """Colour waves of ~0.15 m period: finer than the coarse mesh's vertices (0.08 m apart), coarser than a pixel."""
    c = np.stack([np.sin(points @ [40.0, 5.0, 0.0]), np.sin(points @ [0.0, 40.0, 9.0]),
                  np.sin(points @ [7.0, 0.0, 40.0])], 1)
    return 0.5 + 0.4 * c


def _raycaster(m: trimesh.Trimesh) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(m.vertices.astype(np.float32)), o3d.core.Tensor(m.faces.astype(np.uint32)))
    return scene


@pytest.fixture(scope="module")
def sphere_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finely coloured sphere photographed by 12 exact cameras (two rings), posed as a COLMAP model, and the
    coarse vertex-coloured mesh (1,280 faces) a reconstruction would hand to `texture`."""
    root = tmp_path_factory.mktemp("texture")
    truth = trimesh.creation.icosphere(subdivisions=6, radius=0.5)
    truth.visual.vertex_colors = np.c_[_waves(truth.vertices) * 255, np.full(len(truth.vertices), 255)].astype(
        np.uint8)
    scene = _raycaster(truth)
    (root / "set" / "images").mkdir(parents=True)
    (root / "set" / "gt_cameras").mkdir()
    for i, (az, el) in enumerate([(30.0 * k, 20.0 if k % 2 else -15.0) for k in range(12)]):
        cam = _camera(az, el)
        Image.fromarray(_render(scene, truth, cam)).save(root / "set" / "images" / f"{i:03d}.png")
        write_strecha_camera(root / "set" / "gt_cameras" / f"{i:03d}.png.camera", cam)
    strecha_model(root / "set", root / "posed")
    coarse = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    # Vertex colours as a reconstruction gets them: the photos' colour at each vertex, shading included.
    shade = 0.35 + 0.65 * np.abs(coarse.vertex_normals @ _LIGHT)
    coarse.visual.vertex_colors = np.c_[np.clip(_waves(coarse.vertices) * shade[:, None] * 255, 0, 255),
                                        np.full(len(coarse.vertices), 255)].astype(np.uint8)
    (root / "mesh").mkdir()
    coarse.export(root / "mesh" / "mesh.ply")
    (root / "mesh" / "summary.json").write_text(json.dumps({"viewer_from_model": np.eye(3).tolist()}))
    texture(root / "mesh", root / "posed" / "images", root / "posed" / "sparse", root / "textured", texture_size=512)
    return {"root": root, "truth": root / "truth.ply", "images": root / "posed" / "images",
            "sparse": root / "posed" / "sparse", "mesh": root / "mesh", "textured": root / "textured"}


def _render_unlit(m: trimesh.Trimesh, cam: StrechaCamera) -> tuple[np.ndarray, np.ndarray]:
    scene = _raycaster(m)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    dirs = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1) @ np.linalg.inv(cam.K).T @ cam.R.T
    hit = scene.cast_rays(o3d.core.Tensor(np.c_[np.broadcast_to(cam.C, dirs.shape), dirs].astype(np.float32)))
    prim = hit["primitive_ids"].numpy()
    ok = prim != scene.INVALID_ID
    bary = hit["primitive_uvs"].numpy()[ok]
    w = np.column_stack([1 - bary.sum(1), bary])[:, :, None]
    faces = m.faces[prim[ok].astype(np.int64)]
    img = np.zeros((ok.size, 3))
    if m.visual.kind == "texture":
        uv = (m.visual.uv[faces] * w).sum(1)
        tex = np.asarray(m.visual.material.image.convert("RGB"), np.float64)
        s = tex.shape[0]
        img[ok] = tex[np.clip(((1 - uv[:, 1]) * s).astype(int), 0, s - 1), np.clip((uv[:, 0] * s).astype(int), 0,
                                                                                     s - 1)]
    else:
        img[ok] = (np.asarray(m.visual.vertex_colors[:, :3], np.float64)[faces] * w).sum(1)
    return img.reshape(H, W, 3), ok.reshape(H, W)


def test_the_texture_reproduces_held_out_photos_far_better_than_vertex_colours(sphere_scene: dict) -> None:
    truth = trimesh.creation.icosphere(subdivisions=6, radius=0.5)
    truth.visual.vertex_colors = np.c_[_waves(truth.vertices) * 255, np.full(len(truth.vertices), 255)].astype(
        np.uint8)
    scene = _raycaster(truth)
    textured = trimesh.load(sphere_scene["textured"] / "mesh.obj", process=False, force="mesh")
    coloured = trimesh.load(sphere_scene["mesh"] / "mesh.ply", process=False)
    summary = json.loads((sphere_scene["textured"] / "summary.json").read_text())
    assert summary["texture_size"] == 512 and summary["num_faces"] == 1280 and summary["views"] == 12
    assert summary["covered_fraction"] > 0.9 and summary["viewer_from_model"] == np.eye(3).tolist()
    errors = {"texture": [], "vertex": []}
    for az, el in [(15.0, 5.0), (105.0, 30.0), (200.0, -5.0), (290.0, 10.0)]:  # between the input views
        cam = _camera(az, el, r=2.0)
        photo = _render(scene, truth, cam).astype(np.float64)
        for name, m in (("texture", textured), ("vertex", coloured)):
            img, hit = _render_unlit(m, cam)
            errors[name].append(np.sqrt(np.mean((img[hit] - photo[hit]) ** 2)))
    # Vertex colours cannot hold waves finer than their spacing; the texture can (measured RMS: 4.8 against 18.6
    # grey levels).
    assert np.mean(errors["texture"]) < 7.0 and np.mean(errors["texture"]) < 0.4 * np.mean(errors["vertex"]), errors


def test_a_face_hidden_from_every_photo_takes_no_colour_from_them() -> None:
    """A red card 0.3 m in front of a blue wall, seen only from the front: the wall behind the card takes nothing
    (without the visibility test it would take the card's red), the rest of the wall is blue."""
    wall = trimesh.creation.box(extents=[2.0, 2.0, 0.02])
    card = trimesh.creation.box(extents=[0.6, 0.6, 0.02])
    card.apply_translation([0, 0, 0.3])
    both = trimesh.util.concatenate([wall, card])
    is_card = np.r_[np.zeros(len(wall.faces), bool), np.ones(len(card.faces), bool)]
    f = 200.0
    K = np.array([[f, 0, 100], [0, f, 100], [0, 0, 1.0]])
    views = []
    for dx in (-0.05, 0.0, 0.05):  # near head-on, from +z looking down -z
        R = np.diag([1.0, -1.0, -1.0])
        C = np.array([dx, 0.0, 3.0])
        image = np.zeros((201, 201, 3), np.uint8)
        image[:] = (20, 20, 230)
        image[70:131, 70:131] = (230, 20, 20)  # the card: 0.6 m at 2.7 m is ~44 px, drawn generously
        views.append(PinholeView(K, R, -R @ C, image))
    atlas = unwrap(both.vertices, both.faces, 256)
    baked = bake(both.vertices, both.faces, atlas, views)
    texel, face, bary = rasterize(atlas)
    corners = both.vertices[both.faces[face]]
    p = corners[:, 0] * (1 - bary.sum(1, keepdims=True)) + corners[:, 1] * bary[:, :1] + corners[:, 2] * bary[:, 1:]
    front_of_wall = ~is_card[face] & (p[:, 2] > 0.005)
    behind_card = front_of_wall & (np.abs(p[:, 0]) < 0.2) & (np.abs(p[:, 1]) < 0.2)
    open_wall = front_of_wall & ((np.abs(p[:, 0]) > 0.6) | (np.abs(p[:, 1]) > 0.6)) & (np.abs(p[:, :2]).max(1) < 0.9)
    seen = baked.seen.ravel()[texel]
    colour = baked.texture.reshape(-1, 3)[texel].astype(int)
    assert behind_card.sum() > 50 and not seen[behind_card].any()
    assert seen[open_wall].all() and (colour[open_wall, 2] > 200).all() and (colour[open_wall, 0] < 50).all()
    card_front = is_card[face] & (p[:, 2] > 0.305)
    assert (colour[card_front & seen, 0] > 200).all()


def test_bad_inputs_are_named(sphere_scene: dict, tmp_path: Path) -> None:
    args = (sphere_scene["mesh"], sphere_scene["images"])
    with pytest.raises(ReconstructionInputError, match="texture_size 1000 must be a power of two from 256 to 8192"):
        texture(*args, sphere_scene["sparse"], tmp_path / "a", texture_size=1000)
    with pytest.raises(ReconstructionInputError, match="texture_size 16384 must be a power of two"):
        texture(*args, sphere_scene["sparse"], tmp_path / "b", texture_size=16384)
    with pytest.raises(ReconstructionInputError, match="sparse model folder .*missing does not exist"):
        texture(*args, tmp_path / "missing", tmp_path / "c", texture_size=256)
    (tmp_path / "far").mkdir()
    away = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    away.apply_translation([0, 0, 50.0])  # above every camera, outside every frame
    away.export(tmp_path / "far" / "mesh.ply")
    with pytest.raises(ReconstructionInputError, match="none of the 12 photos sees the mesh"):
        texture(tmp_path / "far", sphere_scene["images"], sphere_scene["sparse"], tmp_path / "d", texture_size=256)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_texturing_off_passes_the_vertex_coloured_mesh_through(sphere_scene: dict, tmp_path: Path) -> None:
    s = texture(sphere_scene["mesh"], sphere_scene["images"], sphere_scene["sparse"], tmp_path / "off",
                enabled=False)
    assert s.texture_size == 0 and s.num_faces == 1280
    assert (tmp_path / "off" / "mesh.ply").read_bytes() == (sphere_scene["mesh"] / "mesh.ply").read_bytes()
    assert convert(tmp_path / "off", tmp_path / "models", formats=["glb"]).textured is False


def test_convert_carries_the_texture_into_every_format(sphere_scene: dict, tmp_path: Path,
                                                       gltf_validator: Callable) -> None:
    from pxr import Usd, UsdGeom, UsdShade

    from kai_steps._usd_check import usdz_compliance_failures

    src = trimesh.load(sphere_scene["textured"] / "mesh.obj", process=False, force="mesh")
    s = convert(sphere_scene["textured"], tmp_path / "plain")
    convert(sphere_scene["textured"], tmp_path / "draco", formats=["glb"], draco=True)
    assert s.textured and {"model.obj", "model.mtl", "model.png", "model.glb", "model.usdz"} <= set(s.files)
    # glb: TEXCOORD_0 and a baseColorTexture holding the very texture, Draco too; the validator finds no error
    reports = gltf_validator(tmp_path / "plain" / "model.glb", tmp_path / "draco" / "model.glb")
    assert all(r["issues"]["numErrors"] == 0 for r in reports.values())
    assert reports[str(tmp_path / "plain" / "model.glb")]["issues"]["numWarnings"] == 0
    gltf, binary = glb_chunks(tmp_path / "plain" / "model.glb")
    material = gltf["materials"][gltf["meshes"][0]["primitives"][0]["material"]]
    assert material["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0, "texCoord": 0}
    view = gltf["bufferViews"][gltf["images"][0]["bufferView"]]
    png = binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                                  np.asarray(src.visual.material.image.convert("RGB")))
    plain = primitive_arrays(tmp_path / "plain" / "model.glb")
    np.testing.assert_allclose(plain["TEXCOORD_0"], src.visual.uv * [1, -1] + [0, 1], atol=1e-6)  # v flipped
    assert "COLOR_0" not in plain
    packed = primitive_arrays(tmp_path / "draco" / "model.glb")
    assert len(packed["indices"]) == 1280 and packed["TEXCOORD_0"].shape[1] == 2
    assert packed["TEXCOORD_0"].min() >= -1e-4 and packed["TEXCOORD_0"].max() <= 1 + 1e-4
    # obj: re-opens with trimesh with the texture and the UVs
    back = trimesh.load(tmp_path / "plain" / "model.obj", process=False, force="mesh")
    assert back.visual.kind == "texture" and back.visual.material.image.size == (512, 512)
    np.testing.assert_allclose(back.visual.uv, src.visual.uv, atol=1e-6)
    # ply: sRGB vertex colours sampled from the texture, seams merged back (the sphere's 642 vertices)
    ply = trimesh.load(tmp_path / "plain" / "model.ply", process=False)
    assert ply.visual.kind == "vertex" and len(ply.vertices) == 642 and len(ply.faces) == 1280
    expected = _waves(ply.vertices / np.linalg.norm(ply.vertices, axis=1, keepdims=True) * 0.5) * 255
    assert np.median(np.abs(np.asarray(ply.visual.vertex_colors)[:, :3] - expected)) < 40
    # usdz: st primvar, UsdUVTexture (sRGB) packaged inside, ARKit-clean
    path = tmp_path / "plain" / "model.usdz"
    assert usdz_compliance_failures(path) == []
    stage = Usd.Stage.Open(str(path))
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))
    st = UsdGeom.PrimvarsAPI(geom.GetPrim()).GetPrimvar("st")
    assert st.GetTypeName() == "texCoord2f[]" and len(st.Get()) == len(src.vertices)
    material, _ = UsdShade.MaterialBindingAPI(geom.GetPrim()).ComputeBoundMaterial()
    surface = material.ComputeSurfaceSource()[0]
    albedo = UsdShade.Shader(surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source.GetPrim())
    assert albedo.GetShaderId() == "UsdUVTexture" and albedo.GetInput("sourceColorSpace").Get() == "sRGB"
    assert "texture.png" in zipfile.ZipFile(path).namelist()
    # the ply is what finalize and mobile_lods read; the vertex-coloured path is unchanged (test_convert.py)
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["textured"] is True


def test_the_same_inputs_give_the_same_bytes(sphere_scene: dict, tmp_path: Path) -> None:
    """xatlas and the bake are deterministic: the pipelines' byte-identical outputs hold with texturing on."""
    texture(sphere_scene["mesh"], sphere_scene["images"], sphere_scene["sparse"], tmp_path / "again", texture_size=512)
    for name in ("mesh.obj", "material.mtl", "material_0.png", "summary.json"):
        assert (tmp_path / "again" / name).read_bytes() == (sphere_scene["textured"] / name).read_bytes(), name
