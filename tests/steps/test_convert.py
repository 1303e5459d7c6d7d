"""convert: every format is written, re-opens with the same geometry, and keeps colours where it can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from kai_steps._colmap import ReconstructionInputError
from kai_steps.convert import convert


def coloured_mesh(folder: Path) -> trimesh.Trimesh:
    """An icosphere coloured by height (red top, blue bottom), written as ``folder/mesh.ply``."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    top = m.vertices[:, 1] > 0
    colors = np.where(top[:, None], [220, 30, 30, 255], [30, 30, 220, 255]).astype(np.uint8)
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=colors)
    folder.mkdir(parents=True, exist_ok=True)
    m.export(folder / "mesh.ply")
    return m


def test_all_formats_reopen_with_the_same_mesh(tmp_path: Path) -> None:
    src = coloured_mesh(tmp_path / "mesh")
    s = convert(tmp_path / "mesh", tmp_path / "models")
    names = {f"model.{f}" for f in ("glb", "obj", "ply", "stl", "usdz")}
    assert set(s.files) == names and s.num_faces == len(src.faces)
    assert {p.name for p in (tmp_path / "models").iterdir()} == names | {"summary.json"}
    for name in ("model.glb", "model.obj", "model.ply"):
        back = trimesh.load(tmp_path / "models" / name, process=False, force="mesh")
        assert len(back.faces) == len(src.faces) and len(back.vertices) == len(src.vertices), name
        np.testing.assert_allclose(back.bounds, src.bounds, atol=1e-5)
        rgb = np.asarray(back.visual.vertex_colors)[:, :3].astype(int)
        top = back.vertices[:, 1] > 0.05
        assert (rgb[top, 0] > 200).all() and (rgb[~top & (back.vertices[:, 1] < -0.05), 2] > 200).all(), name
    stl = trimesh.load(tmp_path / "models" / "model.stl")
    assert len(stl.faces) == len(src.faces) and stl.is_watertight


def test_usdz_is_a_y_up_coloured_mesh(tmp_path: Path) -> None:
    from pxr import Usd, UsdGeom

    src = coloured_mesh(tmp_path / "mesh")
    convert(tmp_path / "mesh", tmp_path / "models", formats=["usdz"])
    stage = Usd.Stage.Open(str(tmp_path / "models" / "model.usdz"))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))
    assert len(geom.GetPointsAttr().Get()) == len(src.vertices)
    assert list(geom.GetFaceVertexCountsAttr().Get()) == [3] * len(src.faces)
    colors = np.array(geom.GetDisplayColorPrimvar().Get())
    assert colors.shape == (len(src.vertices), 3) and colors[:, 0].max() > 0.8 and colors[:, 2].max() > 0.8


def test_draco_glb_is_smaller_and_reopens(tmp_path: Path) -> None:
    src = coloured_mesh(tmp_path / "mesh")
    plain = convert(tmp_path / "mesh", tmp_path / "plain", formats=["glb"])
    packed = convert(tmp_path / "mesh", tmp_path / "draco", formats=["GLB"], draco=True)
    assert packed.files["model.glb"] < 0.7 * plain.files["model.glb"]
    data = (tmp_path / "draco" / "model.glb").read_bytes()
    assert b"KHR_draco_mesh_compression" in data
    back = trimesh.load(tmp_path / "draco" / "model.glb", force="mesh")
    assert len(back.faces) == len(src.faces)
    np.testing.assert_allclose(back.bounds, src.bounds, atol=1e-3)


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
