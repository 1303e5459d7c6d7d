"""The synthetic sample scene: files in the Strecha layout, exact cameras, determinism, SIFT-friendly images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import trimesh

from kai_steps._metrics import read_strecha_dir
from kai_steps.sample_scene import SampleSceneError, render_sample_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "scene"
    render_sample_scene(out, views=8, width=320, height=240, seed=3)
    return out


def test_layout_and_cameras(scene: Path) -> None:
    images = sorted(p.name for p in (scene / "images").glob("*.jpg"))
    assert images == [f"{i:03d}.jpg" for i in range(8)]
    cams = read_strecha_dir(scene / "gt_cameras")
    assert sorted(cams) == images
    K = np.loadtxt(scene / "images" / "K.txt")
    for name, cam in cams.items():
        np.testing.assert_allclose(cam.K, K, atol=1e-6)
        assert (cam.width, cam.height) == (320, 240)
        np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-8)
        # Every camera looks at the object: the world origin's column above the ground projects inside the image.
        x = K @ cam.R.T @ (np.array([0.0, 0.0, 0.45]) - cam.C)
        u, v = x[:2] / x[2]
        assert x[2] > 0 and abs(u - 160) < 2 and abs(v - 120) < 2, name
    meta = json.loads((scene / "scene.json").read_text())
    assert meta["views"] == 8 and meta["width"] == 320


def test_ground_truth_mesh_matches_the_pixels(scene: Path) -> None:
    mesh = trimesh.load(scene / "gt_mesh.ply", process=False)
    assert len(mesh.faces) > 10_000 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    # A ray through the image centre of each camera hits the mesh; the sky rows at the top hit nothing.
    cam = read_strecha_dir(scene / "gt_cameras")["000.jpg"]
    centre_ray = cam.R @ np.linalg.inv(cam.K) @ np.array([160.0, 120.0, 1.0])
    sky_ray = cam.R @ np.linalg.inv(cam.K) @ np.array([160.0, 0.5, 1.0])
    scene_rc = o3d.t.geometry.RaycastingScene()
    scene_rc.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                           o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    rays = np.array([[*cam.C, *centre_ray], [*cam.C, *sky_ray]], np.float32)
    t_hit = scene_rc.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    assert np.isfinite(t_hit).tolist() == [True, False]
    top_row = cv2.imread(str(scene / "images" / "000.jpg"))[0]
    assert top_row.std(axis=0).max() < 6  # plain sky


def test_sift_finds_plenty_of_features(scene: Path) -> None:
    grey = cv2.imread(str(scene / "images" / "000.jpg"), cv2.IMREAD_GRAYSCALE)
    assert len(cv2.SIFT_create().detect(grey, None)) > 400  # at 320x240


def test_deterministic_per_seed(scene: Path, tmp_path: Path) -> None:
    render_sample_scene(tmp_path / "same", views=8, width=320, height=240, seed=3)
    render_sample_scene(tmp_path / "other", views=8, width=320, height=240, seed=4)
    for rel in ("images/005.jpg", "gt_cameras/005.jpg.camera", "gt_mesh.ply"):
        assert (tmp_path / "same" / rel).read_bytes() == (scene / rel).read_bytes(), rel
    assert (tmp_path / "other" / "images/005.jpg").read_bytes() != (scene / "images/005.jpg").read_bytes()


@pytest.mark.parametrize("kwargs, message", [({"views": 2}, "views must be between"),
                                             ({"width": 10}, "image size")])
def test_bad_parameters(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SampleSceneError, match=message):
        render_sample_scene(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_an_existing_output(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(SampleSceneError, match="already exists"):
        render_sample_scene(tmp_path / "out", views=3, width=64, height=64)


def test_capture_path_in_shooting_order_with_photo_effects_and_holdout(tmp_path: Path) -> None:
    summary = render_sample_scene(tmp_path / "cap", views=10, width=160, height=120, seed=1, path="capture",
                                  holdout=3)
    assert (summary.path, summary.holdout) == ("capture", 3)
    cams = read_strecha_dir(tmp_path / "cap" / "gt_cameras")
    assert sorted(cams) == [f"{i:03d}.jpg" for i in range(10)]
    dist = [float(np.linalg.norm(c.C - [0, 0, 0.45])) for c in cams.values()]
    heights = [float(c.C[2]) for c in cams.values()]
    # 4 low-orbit photos, 4 high-orbit ones, 2 close-ups, in that order.
    assert max(heights[:4]) < min(heights[4:8]) and max(dist[8:]) < 2.1 < 2.8 < min(dist[:8])
    grey = [cv2.imread(str(tmp_path / "cap" / "images" / f"{i:03d}.jpg"), cv2.IMREAD_GRAYSCALE) for i in range(10)]
    assert np.ptp([g[:10].mean() for g in grey]) > 3  # the sky's brightness follows the drifting exposure
    held = read_strecha_dir(tmp_path / "cap" / "holdout" / "gt_cameras")
    assert sorted(held) == ["h000.jpg", "h001.jpg", "h002.jpg"]
    assert all((tmp_path / "cap" / "holdout" / "images" / n).is_file() for n in held)
    assert not any(np.allclose(h.C, c.C, atol=0.05) for h in held.values() for c in cams.values())
    assert json.loads((tmp_path / "cap" / "scene.json").read_text())["path"] == "capture"


def test_default_scene_json_is_unchanged(scene: Path) -> None:
    # The rings path writes the keys it always wrote: benchmarks and caches compare these files byte for byte.
    assert sorted(json.loads((scene / "scene.json").read_text())) == ["focal", "height", "mesh_diagonal",
                                                                    "mesh_faces", "views", "width"]


def test_bad_path_and_holdout(tmp_path: Path) -> None:
    with pytest.raises(SampleSceneError, match="path must be"):
        render_sample_scene(tmp_path / "out", path="spiral")  # type: ignore[arg-type]
    with pytest.raises(SampleSceneError, match="holdout must be"):
        render_sample_scene(tmp_path / "out", holdout=-1)
