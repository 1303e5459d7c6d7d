"""radiance_field + field_mesh on a rendered sphere with exact cameras (no SfM): the field must explain held-out
views far better than a constant colour, and its marching-cubes mesh must sit on the true sphere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from kai_steps._colmap import ReconstructionInputError
from kai_steps._nerf import sphere_colour, sphere_scene
from kai_steps.radiance_field import RadianceFieldError, field_mesh, radiance_field

RADIUS = 1.0


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 views at 100x75 px: ``scene/images/*.png`` (the preprocess layout) and ``scene/sparse``."""
    return sphere_scene(tmp_path_factory.mktemp("sphere") / "scene", views=12, width=100, height=75, radius=RADIUS)


@pytest.fixture(scope="module")
def trained(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    field = tmp_path_factory.mktemp("field") / "field"
    summary = radiance_field(scene, scene / "sparse", field, iterations=150, grid_size=32, rays_per_batch=512,
                             device="cpu")
    return field, summary


def test_field_explains_held_out_views(trained: tuple[Path, object]) -> None:
    field, summary = trained
    # Views 0 and 8 are held out; a constant mean colour scores about 11 dB on them.
    assert summary.baseline_psnr < 13
    assert summary.psnr > 20 and summary.psnr > summary.baseline_psnr + 8
    assert summary.device == "cpu" and summary.grid == [32, 32, 32] and summary.num_views == 12
    written = json.loads((field / "summary.json").read_text())
    assert written["psnr"] == summary.psnr and written["iterations"] == 150
    state = torch.load(field / "field.pt", weights_only=True)
    assert state["density"].shape == (1, 1, 32, 32, 32) and state["colour"].shape == (1, 12, 32, 32, 32)
    # The scene box comes from the sparse points on the unit sphere (1-99% box, padded).
    assert np.all(state["lo"].numpy() < -RADIUS) and np.all(state["hi"].numpy() > RADIUS)
    assert np.all(state["hi"].numpy() < 1.5 * RADIUS)


def test_mesh_lies_on_the_sphere_with_its_colours(trained: tuple[Path, object], tmp_path: Path) -> None:
    field, _ = trained
    summary = field_mesh(field, tmp_path / "mesh")
    assert summary.method == "radiance_field" and summary.num_faces > 1000
    mesh = trimesh.load(tmp_path / "mesh" / "mesh.ply", process=False)
    rot = np.array(json.loads((tmp_path / "mesh" / "summary.json").read_text())["viewer_from_model"])
    verts = np.asarray(mesh.vertices) @ rot  # back to the model's world: x_viewer = rot @ x_model
    err = np.abs(np.linalg.norm(verts, axis=1) - RADIUS)
    voxel = 2.4 * RADIUS / 31  # about 0.077
    assert err.mean() < 0.5 * voxel and np.percentile(err, 90) < 1.5 * voxel
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(colours - sphere_colour(verts, RADIUS)).mean() < 0.08
    assert len(mesh.faces) == summary.num_faces


def test_face_budget_and_level(trained: tuple[Path, object], tmp_path: Path) -> None:
    field, _ = trained
    small = field_mesh(field, tmp_path / "small", level=0.3, face_budget=500)
    assert 0 < small.num_faces <= 500
    with pytest.raises(RadianceFieldError, match="between 0 and 1"):
        field_mesh(field, tmp_path / "bad", level=1.5)
    assert not (tmp_path / "bad").exists()


def test_seeded_runs_are_identical_on_cpu(scene: Path, tmp_path: Path) -> None:
    # A plain folder of images and a model in sparse/0 are read as well as the preprocess layout.
    shutil.copytree(scene / "sparse", tmp_path / "model" / "0")
    runs = []
    for name in ("a", "b"):
        radiance_field(scene / "images", tmp_path / "model", tmp_path / name, iterations=12, grid_size=16,
                       rays_per_batch=256, device="cpu", seed=3)
        runs.append(torch.load(tmp_path / name / "field.pt", weights_only=True))
    for key in ("density", "colour", "background"):
        assert torch.equal(runs[0][key], runs[1][key])


def test_bad_inputs_fail_clearly_and_publish_nothing(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "field"
    with pytest.raises(ReconstructionInputError, match="does not exist"):
        radiance_field(scene, tmp_path / "nowhere", out, iterations=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconstructionInputError, match="holds no COLMAP model"):
        radiance_field(scene, tmp_path / "empty", out, iterations=1)
    partial = tmp_path / "partial"
    shutil.copytree(scene / "images", partial)
    (partial / "view_005.png").unlink()
    with pytest.raises(ReconstructionInputError, match="view_005.png"):
        radiance_field(partial, scene / "sparse", out, iterations=1)
    with pytest.raises(RadianceFieldError, match="grid_size"):
        radiance_field(scene, scene / "sparse", out, grid_size=2)
    if not torch.cuda.is_available():
        with pytest.raises(RadianceFieldError, match="no CUDA device"):
            radiance_field(scene, scene / "sparse", out, device="cuda")
    with pytest.raises(RadianceFieldError, match="no field.pt"):
        field_mesh(tmp_path / "empty", tmp_path / "mesh")
    (tmp_path / "empty" / "field.pt").write_bytes(b"not a torch file")
    with pytest.raises(RadianceFieldError, match="not a radiance field"):
        field_mesh(tmp_path / "empty", tmp_path / "mesh")
    # One step from the initial fog: nothing reaches the default opacity level.
    radiance_field(scene, scene / "sparse", tmp_path / "raw", iterations=1, grid_size=8, rays_per_batch=16,
                   device="cpu")
    with pytest.raises(RadianceFieldError, match="no surface at level 0.5"):
        field_mesh(tmp_path / "raw", tmp_path / "mesh")
    assert not out.exists() and not (tmp_path / "mesh").exists()
    assert len(list((scene / "images").iterdir())) == 12


def test_radial_distortion_is_undone(scene: Path, tmp_path: Path) -> None:
    """Images distorted with a known SIMPLE_RADIAL k come back as the pinhole renders where OpenCV can fill them."""
    import cv2
    import pycolmap

    from kai_steps._nerf import load_posed

    k = 0.1
    rec = pycolmap.Reconstruction(str(scene / "sparse"))
    (tmp_path / "images").mkdir()
    for cam in rec.cameras.values():
        f, cx, cy = cam.params[0], cam.params[2], cam.params[3]
        K_cv = np.array([[f, 0, cx - 0.5], [0, f, cy - 0.5], [0, 0, 1.0]])
        u, v = np.meshgrid(np.arange(cam.width, dtype=np.float32), np.arange(cam.height, dtype=np.float32))
        # Each distorted pixel shows the pinhole image at its undistorted position.
        und = cv2.undistortPoints(np.stack([u, v], -1).reshape(-1, 1, 2), K_cv, np.array([k, 0, 0, 0.0]), P=K_cv)
        mx, my = und.reshape(cam.height, cam.width, 2).transpose(2, 0, 1)
        name = next(i.name for i in rec.images.values() if i.camera_id == cam.camera_id)
        pinhole = cv2.imread(str(scene / "images" / name))
        cv2.imwrite(str(tmp_path / "images" / name), cv2.remap(pinhole, mx, my, cv2.INTER_LINEAR))
        cam.model = pycolmap.CameraModelId.SIMPLE_RADIAL
        cam.params = [f, cx, cy, k]
    (tmp_path / "model").mkdir()
    rec.write(str(tmp_path / "model"))
    views, points = load_posed(tmp_path / "images", tmp_path / "model", 400)
    assert len(views) == 12 and len(points) == len(rec.points3D)
    for view in views[:3]:
        truth = cv2.cvtColor(cv2.imread(str(scene / "images" / view.name)), cv2.COLOR_BGR2RGB)
        assert 0.5 < view.valid.mean() < 1.0 and not view.valid[0, 0]  # pincushion: corners cannot be filled
        inner = cv2.erode(view.valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        diff = np.abs(view.image.astype(float) - truth)[inner] / 255.0
        assert diff.mean() < 0.02
