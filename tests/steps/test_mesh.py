"""mesh: Poisson and TSDF surfaces, cleaning, decimation, colours; the F-score/Chamfer helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import trimesh

from kai_steps._colmap import ReconstructionInputError, strecha_model
from kai_steps._geometry import mesh_scores
from kai_steps.mesh import mesh
from kai_steps.point_cloud import point_cloud
from tests.conftest import DATASETS

FOUNTAIN = DATASETS / "fountain_p11"


def _sphere_dense(folder: Path, n: int = 6000, radius: float = 1.0, seed: int = 0) -> Path:
    """A dense folder holding an oriented, coloured point sample of a sphere: red above z=0, blue below."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(radius * normals))
    pcd.normals = o3d.utility.Vector3dVector(normals)
    pcd.colors = o3d.utility.Vector3dVector(np.where(normals[:, 2:] > 0, [0.9, 0.1, 0.1], [0.1, 0.1, 0.9]))
    folder.mkdir(parents=True)
    o3d.io.write_point_cloud(str(folder / "points.ply"), pcd)
    return folder


def test_poisson_surface_of_a_sphere(tmp_path: Path) -> None:
    dense = _sphere_dense(tmp_path / "dense")
    s = mesh(dense, tmp_path / "mesh", face_budget=5000)
    out = trimesh.load(tmp_path / "mesh" / "mesh.ply", process=False)
    assert s.num_faces == len(out.faces) <= 5000 and s.num_faces > 2000
    r = np.linalg.norm(out.vertices, axis=1)
    assert np.abs(r - 1.0).max() < 0.03
    # Colours follow the points: red on the upper half, blue on the lower.
    rgb = np.asarray(out.visual.vertex_colors)[:, :3].astype(int)
    up, down = out.vertices[:, 2] > 0.2, out.vertices[:, 2] < -0.2
    assert (rgb[up, 0] > rgb[up, 2]).mean() > 0.99 and (rgb[down, 2] > rgb[down, 0]).mean() > 0.99
    assert (tmp_path / "mesh" / "summary.json").is_file()


def test_face_budget_and_debris_removal(tmp_path: Path) -> None:
    dense = _sphere_dense(tmp_path / "dense")
    # A small far-away blob of points: Poisson makes a little island of it, which cleaning must drop.
    pcd = o3d.io.read_point_cloud(str(dense / "points.ply"))
    blob = _sphere_dense(tmp_path / "blob", n=100, radius=0.04, seed=1)
    small = o3d.io.read_point_cloud(str(blob / "points.ply")).translate((3.0, 0.0, 0.0))
    o3d.io.write_point_cloud(str(dense / "points.ply"), pcd + small)
    s = mesh(dense, tmp_path / "mesh", face_budget=800)
    out = trimesh.load(tmp_path / "mesh" / "mesh.ply", process=False)
    assert s.num_faces <= 800 and len(out.faces) == s.num_faces
    assert out.vertices[:, 0].max() < 1.5, "the floating island survived cleaning"


@pytest.mark.parametrize(("gap", "kept"), [(1.5, False), (0.05, True)], ids=["floating", "nearby"])
def test_a_sizeable_part_is_dropped_only_when_it_floats_away(tmp_path: Path, gap: float, kept: bool) -> None:
    # A part too big for the 2% debris rule (a cloud the stereo matched, or a statue beside the facade):
    # dropped when it floats far from the main surface, kept when it is near it.
    dense = _sphere_dense(tmp_path / "dense")
    part = _sphere_dense(tmp_path / "part", n=600, radius=0.2, seed=1)
    moved = o3d.io.read_point_cloud(str(part / "points.ply")).translate((1.2 + gap, 0.0, 0.0))
    o3d.io.write_point_cloud(str(dense / "points.ply"), o3d.io.read_point_cloud(str(dense / "points.ply")) + moved)
    mesh(dense, tmp_path / "mesh", face_budget=20000)
    out = trimesh.load(tmp_path / "mesh" / "mesh.ply", process=False)
    assert (out.vertices[:, 0] > 1.0 + gap).any() == kept
    assert (out.vertices[:, 0] < -0.9).any()  # the main surface is always there


def test_tsdf_method_cleans_the_dense_steps_mesh(tmp_path: Path) -> None:
    dense = _sphere_dense(tmp_path / "dense")
    big = trimesh.creation.icosphere(subdivisions=4)
    tiny = trimesh.creation.icosphere(subdivisions=0, radius=0.05)
    tiny.apply_translation((4.0, 0, 0))
    trimesh.util.concatenate([big, tiny]).export(dense / "tsdf_mesh.ply")
    s = mesh(dense, tmp_path / "mesh", method="tsdf", face_budget=100000)
    assert s.method == "tsdf" and s.num_faces == len(big.faces) and s.watertight


def test_point_cloud_to_mesh_on_real_photos(tmp_path: Path) -> None:
    if not FOUNTAIN.is_dir():
        pytest.skip(f"dataset {FOUNTAIN} is not present")
    model = strecha_model(FOUNTAIN, tmp_path / "model", names=["0004.jpg", "0005.jpg", "0006.jpg"], scale=0.125)
    point_cloud(model / "images", model / "sparse", tmp_path / "dense", max_image_size=400, density="low")
    for method in ("poisson", "tsdf"):
        s = mesh(tmp_path / "dense", tmp_path / method, method=method, face_budget=5000)
        out = trimesh.load(tmp_path / method / "mesh.ply", process=False)
        assert 1000 < s.num_faces <= 5000 and out.visual.kind == "vertex"
        assert np.asarray(out.visual.vertex_colors)[:, :3].std() > 5


def test_ply_with_no_points_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dense").mkdir()
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
    (tmp_path / "dense" / "points.ply").write_text(header + "property float z\nend_header\n")
    with pytest.raises(ReconstructionInputError, match=r"points\.ply holds 0 points"):
        mesh(tmp_path / "dense", tmp_path / "mesh")
    assert not (tmp_path / "mesh").exists()


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    (tmp_path / "dense").mkdir()
    with pytest.raises(ReconstructionInputError, match="holds no points.ply"):
        mesh(tmp_path / "dense", tmp_path / "mesh")
    dense = _sphere_dense(tmp_path / "dense2")
    with pytest.raises(ReconstructionInputError, match="tsdf_mesh.ply does not exist"):
        mesh(dense, tmp_path / "mesh", method="tsdf")
    assert not (tmp_path / "mesh").exists()


def test_scores_of_identical_and_shifted_surfaces() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5)
    same = mesh_scores(sphere, sphere, [0.01], samples=50000)[0]
    assert same.fscore > 0.99 and same.chamfer < 0.005
    grown = trimesh.creation.icosphere(subdivisions=5, radius=1.02)
    near, far = mesh_scores(grown, sphere, [0.01, 0.03], samples=50000)
    assert near.fscore < 0.01 and far.fscore > 0.99
    assert abs(near.chamfer - 0.02) < 0.002
    half = sphere.submesh([np.nonzero(sphere.triangles_center[:, 2] > 0)[0]], append=True)
    part = mesh_scores(half, sphere, [0.01], samples=50000)[0]
    assert part.precision > 0.99 and 0.45 < part.recall < 0.56
    # The classic sample-to-sample variant is biased by the sample spacing; both agree at a larger tau.
    classic = mesh_scores(sphere, sphere, [0.01, 0.05], samples=50000, exact=False)
    assert classic[0].fscore < same.fscore and classic[1].fscore > 0.99
