"""radiance_field + field_mesh on a rendered sphere and on the synthetic sample scene, both with exact cameras (no
SfM): the field must explain held-out views far better than a constant colour (or the step fails), and its
marching-cubes mesh must sit on the true surface and face the cameras that saw it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pycolmap
import pytest
import torch
import trimesh
from PIL import Image
from skimage.metrics import structural_similarity

from kai_steps._colmap import ReconstructionInputError, strecha_model
from kai_steps._nerf import sphere_colour, sphere_scene
from kai_steps.radiance_field import RadianceFieldError, field_mesh, radiance_field
from kai_steps.sample_scene import render_sample_scene

RADIUS = 1.0
GATE = r"held-out PSNR .* dB does not beat the constant-colour baseline .* dB by the required 3 dB \(min_psnr_gain"


def _model_frame_mesh(mesh_dir: Path) -> trimesh.Trimesh:
    """The written mesh taken back from the viewer frame to the cameras' (a rotation: winding unchanged)."""
    mesh = trimesh.load(mesh_dir / "mesh.ply", process=False)
    rot = np.array(json.loads((mesh_dir / "summary.json").read_text())["viewer_from_model"])
    return trimesh.Trimesh(np.asarray(mesh.vertices) @ rot, mesh.faces, process=False)


def _facing_fractions(mesh: trimesh.Trimesh, sparse: Path) -> dict[str, float]:
    """Per training camera: of the faces it sees (the first hit of a ray through every other pixel), the fraction
    whose right-hand normal points towards it. A single-sided viewer shows exactly those."""
    V, F = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    normals = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))
    out = {}
    rec = pycolmap.Reconstruction(str(sparse))
    for img in rec.images.values():
        cam = rec.cameras[img.camera_id]
        pose = img.cam_from_world().matrix()
        R, centre = pose[:, :3], img.projection_center()
        u, v = np.meshgrid(np.arange(0, cam.width, 2) + 0.5, np.arange(0, cam.height, 2) + 0.5)
        d = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(cam.calibration_matrix()).T @ R
        rays = np.concatenate([np.broadcast_to(centre, d.shape), d / np.linalg.norm(d, axis=1, keepdims=True)], 1)
        hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["primitive_ids"].numpy()
        seen = np.unique(hit[hit != o3d.t.geometry.RaycastingScene.INVALID_ID])
        if len(seen) >= 20:
            towards = centre - V[F[seen]].mean(axis=1)
            out[img.name] = float(np.mean(np.einsum("ij,ij->i", normals[seen], towards) > 0))
    return out


def _normals_follow_winding(mesh_dir: Path) -> float:
    """Fraction of faces whose stored vertex normals (mean of the three) agree with the face's winding."""
    mesh = trimesh.load(mesh_dir / "mesh.ply", process=False)
    stored = np.asarray(mesh.vertex_normals)[mesh.faces].mean(axis=1)  # as read from the file
    return float(np.mean(np.einsum("ij,ij->i", stored, mesh.face_normals) > 0))


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


def test_field_explains_held_out_views(scene: Path, trained: tuple[Path, object]) -> None:
    field, summary = trained
    # Views 0 and 8 are held out; a constant mean colour scores about 11 dB on them.
    assert summary.baseline_psnr < 13
    assert summary.psnr > 20 and summary.psnr > summary.baseline_psnr + 8
    assert summary.ssim is not None and summary.ssim > 0.7
    assert summary.device == "cpu" and summary.grid == [32, 32, 32] and summary.num_views == 12
    written = json.loads((field / "summary.json").read_text())
    assert written["psnr"] == summary.psnr and written["ssim"] == summary.ssim and written["iterations"] == 150
    assert written["min_psnr_gain"] == 3.0 and written["held_out_rays"] == 2 * 100 * 75
    # The held-out views are saved as rendered, and scoring the saved images gives the reported figures.
    per_view = {v["name"]: v for v in written["held_out_per_view"]}
    assert sorted(per_view) == ["view_000.png", "view_008.png"]
    for name, scores in per_view.items():
        render = np.asarray(Image.open(field / "held_out" / name), dtype=float) / 255.0
        truth = np.asarray(Image.open(scene / "images" / name), dtype=float) / 255.0
        assert render.shape == truth.shape == (75, 100, 3)
        assert abs(-10 * np.log10(np.mean((render - truth) ** 2)) - scores["psnr"]) < 0.1
        ssim = structural_similarity(truth, render, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
        assert abs(ssim - scores["ssim"]) < 0.01
    assert summary.ssim == pytest.approx(np.mean([v["ssim"] for v in per_view.values()]), abs=1e-4)
    state = torch.load(field / "field.pt", weights_only=True)
    assert state["density"].shape == (1, 1, 32, 32, 32) and state["colour"].shape == (1, 12, 32, 32, 32)
    # The scene box comes from the sparse points on the unit sphere (1-99% box, padded).
    assert np.all(state["lo"].numpy() < -RADIUS) and np.all(state["hi"].numpy() > RADIUS)
    assert np.all(state["hi"].numpy() < 1.5 * RADIUS)


@pytest.mark.parametrize("surface_from", ["depth", "density"])
def test_mesh_lies_on_the_sphere_with_its_colours(trained: tuple[Path, object], tmp_path: Path,
                                                 surface_from: str) -> None:
    field, _ = trained
    summary = field_mesh(field, tmp_path / "mesh", surface_from=surface_from)
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


@pytest.mark.parametrize("surface_from", ["density"])  # "depth" leaves holes (see field_mesh): 57% at 3 views
def test_mesh_faces_the_cameras(scene: Path, trained: tuple[Path, object], tmp_path: Path, surface_from: str) -> None:
    """Winding counter-clockwise seen from outside: what each camera sees of the sphere is its front side (it was
    0% before the winding was checked against the field), the normals in the file agree, decimation keeps it."""
    field, _ = trained
    for name, budget in (("full", 200000), ("decimated", 500)):
        field_mesh(field, tmp_path / name, face_budget=budget, surface_from=surface_from)
        mesh = _model_frame_mesh(tmp_path / name)
        facing = _facing_fractions(mesh, scene / "sparse")
        assert len(facing) == 12 and min(facing.values()) >= 0.95, (name, facing)
        assert _normals_follow_winding(tmp_path / name) >= 0.99
        # Outward from the sphere's centre, too.
        centres = np.asarray(mesh.triangles_center)
        assert np.mean(np.einsum("ij,ij->i", mesh.face_normals, centres) > 0) >= 0.95


@pytest.mark.slow  # 13 s on an idle 2-core machine, twice that when shared; the sphere test above runs always
def test_sample_scene_mesh_faces_the_cameras_and_its_ground_points_up(tmp_path: Path) -> None:
    """The synthetic sample (an object on a ground plane, exact cameras, no sparse points): a short run still finds
    the ground, whose near-horizontal faces must point up (the issue counted 21,195 pointing down, 155 up)."""
    render_sample_scene(tmp_path / "sample", views=16, width=160, height=120)
    data = strecha_model(tmp_path / "sample", tmp_path / "data")
    summary = radiance_field(data, data / "sparse", tmp_path / "field", iterations=150, grid_size=32,
                             rays_per_batch=1024, device="cpu")
    assert summary.psnr > summary.baseline_psnr + 6 and summary.ssim is not None and summary.ssim > 0.4
    field_mesh(tmp_path / "field", tmp_path / "mesh")
    facing = _facing_fractions(_model_frame_mesh(tmp_path / "mesh"), data / "sparse")
    assert len(facing) == 16 and min(facing.values()) >= 0.8, facing
    mesh = trimesh.load(tmp_path / "mesh" / "mesh.ply", process=False)  # viewer frame: +Y up
    ny = mesh.face_normals[:, 1]
    horizontal = np.abs(ny) > 0.9
    assert horizontal.sum() > 500 and np.mean(ny[horizontal] > 0) >= 0.9
    assert _normals_follow_winding(tmp_path / "mesh") >= 0.99


def test_face_budget_and_level(trained: tuple[Path, object], tmp_path: Path) -> None:
    field, _ = trained
    small = field_mesh(field, tmp_path / "small", level=0.3, face_budget=500, surface_from="density")
    assert 0 < small.num_faces <= 500
    with pytest.raises(RadianceFieldError, match="between 0 and 1"):
        field_mesh(field, tmp_path / "bad", level=1.5)
    with pytest.raises(RadianceFieldError, match="surface_from must be 'depth' or 'density', not 'sdf'"):
        field_mesh(field, tmp_path / "bad", surface_from="sdf")
    assert not (tmp_path / "bad").exists()


def test_seeded_runs_are_identical_on_cpu(scene: Path, tmp_path: Path) -> None:
    # A plain folder of images and a model in sparse/0 are read as well as the preprocess layout.
    shutil.copytree(scene / "sparse", tmp_path / "model" / "0")
    runs = []
    for name in ("a", "b"):
        radiance_field(scene / "images", tmp_path / "model", tmp_path / name, iterations=12, grid_size=16,
                       rays_per_batch=256, device="cpu", seed=3, min_psnr_gain=None)
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
    with pytest.raises(RadianceFieldError, match="min_psnr_gain must be a finite number"):
        radiance_field(scene, scene / "sparse", out, min_psnr_gain=float("nan"))
    # One step from the initial fog (the gate turned off): nothing reaches the default opacity level.
    radiance_field(scene, scene / "sparse", tmp_path / "raw", iterations=1, grid_size=8, rays_per_batch=16,
                   device="cpu", min_psnr_gain=None)
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


def test_a_field_no_better_than_a_constant_colour_fails_the_gate(scene: Path, tmp_path: Path) -> None:
    """Two steps from the initial fog explain nothing: the step names the figures and publishes no field."""
    with pytest.raises(RadianceFieldError, match=GATE) as failed:
        radiance_field(scene, scene / "sparse", tmp_path / "field", iterations=2, grid_size=16, rays_per_batch=256,
                       device="cpu")
    assert "\n" not in str(failed.value)
    assert not (tmp_path / "field").exists() and not list(tmp_path.iterdir())
    # Fewer than 8 views: scattered pixels are held out, the gate holds on them, and SSIM (a windowed measure)
    # is not reported.
    few = sphere_scene(tmp_path / "few", views=6, width=48, height=36)
    with pytest.raises(RadianceFieldError, match=GATE):
        radiance_field(few, few / "sparse", tmp_path / "few_field", iterations=2, grid_size=16, rays_per_batch=256,
                       device="cpu")
    assert not (tmp_path / "few_field").exists()
    summary = radiance_field(few, few / "sparse", tmp_path / "few_field", iterations=2, grid_size=16,
                             rays_per_batch=256, device="cpu", min_psnr_gain=-100)
    assert summary.ssim is None and summary.psnr < summary.baseline_psnr + 3
    written = json.loads((tmp_path / "few_field" / "summary.json").read_text())
    assert written["held_out_per_view"] == [] and written["held_out_rays"] > 0
    assert not (tmp_path / "few_field" / "held_out").exists()


def test_torch_threads_stay_within_the_cores_when_the_pod_asks_for_more(scene: Path, tmp_path: Path) -> None:
    """OMP_NUM_THREADS follows the pod's CPU limit; on a machine with fewer cores torch must not oversubscribe."""
    code = ("import sys; from pathlib import Path; from kai_steps.radiance_field import radiance_field; "
            "s = Path(sys.argv[1]); radiance_field(s, s / 'sparse', Path(sys.argv[2]), iterations=1, grid_size=8, "
            "rays_per_batch=16, device='cpu', min_psnr_gain=None)")
    cores = len(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": str(cores + 6)}
    subprocess.run([sys.executable, "-c", code, str(scene), str(tmp_path / "field")], env=env, check=True,
                   capture_output=True, timeout=300)
    assert json.loads((tmp_path / "field" / "summary.json").read_text())["cpu_threads"] == cores
