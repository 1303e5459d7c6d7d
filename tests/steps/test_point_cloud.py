"""point_cloud on real photos (fountain_p11): exact ground-truth poses and a pycolmap SfM model must agree."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pycolmap
import pytest
from scipy.spatial import cKDTree

from kai_steps._colmap import PosedViews, ReconstructionInputError, View, strecha_model
from kai_steps._metrics import read_strecha_dir
from kai_steps._stereo import pair_depth
from kai_steps.point_cloud import point_cloud
from tests.conftest import DATASETS

FOUNTAIN = DATASETS / "fountain_p11"
NAMES = [f"{i:04d}.jpg" for i in range(3, 8)]
needs_fountain = pytest.mark.skipif(not FOUNTAIN.is_dir(), reason=f"dataset {FOUNTAIN} is not present")


@pytest.fixture(scope="module")
def gt_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five fountain views at 768x512 with the exact ground-truth cameras (PINHOLE, no sparse points)."""
    return strecha_model(FOUNTAIN, tmp_path_factory.mktemp("gt"), names=NAMES, scale=0.25)


@pytest.fixture(scope="module")
def sfm_model(gt_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same five images through pycolmap SfM (SIMPLE_RADIAL, sparse points, model in sparse/0)."""
    out = tmp_path_factory.mktemp("sfm")
    db, images = out / "db.db", gt_model / "images"
    pycolmap.set_random_seed(0)
    eo = pycolmap.FeatureExtractionOptions()
    eo.num_threads = 2
    eo.sift.max_num_features = 4000
    ro = pycolmap.ImageReaderOptions()
    ro.camera_model = "SIMPLE_RADIAL"
    pycolmap.extract_features(db, images, image_names=NAMES, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=ro, extraction_options=eo, device=pycolmap.Device.cpu)
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = 2
    pycolmap.match_exhaustive(db, matching_options=mo, device=pycolmap.Device.cpu)
    po = pycolmap.IncrementalPipelineOptions()
    po.num_threads = 2
    (out / "sparse").mkdir()
    recs = pycolmap.incremental_mapping(db, images, out / "sparse", options=po)
    assert max(r.num_reg_images() for r in recs.values()) == len(NAMES)
    return out


def _world_points(dense: Path) -> np.ndarray:
    """The dense points mapped back from the viewer frame onto the COLMAP model's world."""
    rot = np.array(json.loads((dense / "summary.json").read_text())["viewer_from_model"])
    return np.asarray(o3d.io.read_point_cloud(str(dense / "points.ply")).points) @ rot


@needs_fountain
def test_dense_points_from_ground_truth_poses(gt_model: Path, tmp_path: Path) -> None:
    dense = tmp_path / "dense"
    s = point_cloud(gt_model / "images", gt_model / "sparse", dense, max_image_size=768, density="low")
    assert s.num_views == 5 and s.num_depth_maps >= 5 and s.num_points > 5000
    pcd = o3d.io.read_point_cloud(str(dense / "points.ply"))
    assert len(pcd.points) == s.num_points and pcd.has_colors() and pcd.has_normals()
    # Real colours (the fountain is reddish sandstone), not a constant.
    colors = np.asarray(pcd.colors)
    assert colors.std(0).min() > 0.02 and colors[:, 0].mean() > colors[:, 2].mean()
    # Points lie in front of the ground-truth cameras at the fountain's distance (metres).
    pts = _world_points(dense)
    cams = read_strecha_dir(FOUNTAIN / "gt_dense_cameras")
    for name in NAMES:
        c = cams[name]
        depth = (pts - c.C) @ c.R[:, 2]
        assert np.median(depth) > 2.0 and np.median(depth) < 15.0
    assert (dense / "tsdf_mesh.ply").is_file()


@needs_fountain
def test_sfm_model_gives_the_same_surface_as_ground_truth(gt_model: Path, sfm_model: Path, tmp_path: Path) -> None:
    """Undistorted SIMPLE_RADIAL views with sparse points (depth range from SfM) reproduce the exact-pose cloud
    once the SfM frame is Sim(3)-aligned onto the ground-truth cameras."""
    gt_dense, sfm_dense = tmp_path / "gt", tmp_path / "sfm"
    point_cloud(gt_model / "images", gt_model / "sparse", gt_dense, max_image_size=768, density="low")
    s = point_cloud(gt_model / "images", sfm_model / "sparse", sfm_dense, max_image_size=768, density="low")
    assert s.num_points > 5000
    rec = pycolmap.Reconstruction(str(sfm_model / "sparse" / "0"))
    cams = read_strecha_dir(FOUNTAIN / "gt_dense_cameras")
    imgs = sorted(rec.images.values(), key=lambda i: i.name)
    sim = pycolmap.estimate_sim3d(np.array([i.projection_center() for i in imgs]),
                                  np.array([cams[i.name].C for i in imgs]))
    aligned = sim.scale * _world_points(sfm_dense) @ sim.rotation.matrix().T + sim.translation
    dist, _ = cKDTree(_world_points(gt_dense)).query(aligned)
    voxel = json.loads((gt_dense / "summary.json").read_text())["voxel_size"]
    assert np.median(dist) < 2 * voxel, f"median {np.median(dist):.3f} m vs voxel {voxel:.3f} m"


def test_empty_sparse_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "sparse").mkdir()
    with pytest.raises(ReconstructionInputError, match="holds no COLMAP model"):
        point_cloud(tmp_path / "images", tmp_path / "sparse", tmp_path / "dense")
    assert not (tmp_path / "dense").exists()


@needs_fountain
def test_images_missing_from_the_folder_are_named(gt_model: Path, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(ReconstructionInputError, match=r"5 posed images .* not in .*0003\.jpg"):
        point_cloud(tmp_path / "images", gt_model / "sparse", tmp_path / "dense")
    assert not (tmp_path / "dense").exists() and len(list((gt_model / "images").iterdir())) == 5


@needs_fountain
def test_views_that_cannot_form_a_stereo_pair(gt_model: Path, tmp_path: Path) -> None:
    """Two views 180 degrees apart share nothing: no depth map, a clear error, no output."""
    rec = pycolmap.Reconstruction(str(gt_model / "sparse"))
    for image_id in list(rec.images)[2:]:
        rec.deregister_frame(rec.images[image_id].frame_id)
    img = rec.images[list(rec.images)[1]]
    pose = img.cam_from_world()
    flip = pycolmap.Rigid3d(pycolmap.Rotation3d(np.diag([-1.0, 1.0, -1.0])), np.zeros(3))
    rec.frames[img.frame_id].rig_from_world = flip * pose
    (tmp_path / "sparse").mkdir()
    rec.write(str(tmp_path / "sparse"))
    with pytest.raises(ReconstructionInputError, match="no stereo pair"):
        point_cloud(gt_model / "images", tmp_path / "sparse", tmp_path / "dense")
    assert not (tmp_path / "dense").exists()


@pytest.mark.parametrize("baseline", [0.3, 2.5])
def test_a_pair_wider_than_its_disparity_search_can_span_is_dropped(baseline: float) -> None:
    """Close-ups beside an orbit pair views whose baseline dwarfs the depth: the disparities to search then fall
    off the image, where OpenCV's SGBM failed on a negative allocation; such a pair gives no depth map. A pair of
    ordinary width over the same wall (a textured plane 1 m in front of both cameras) still measures it."""
    w, h, f = 960, 720, 900.0
    shift = round(f * baseline)  # the wall moves this many pixels between the views
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (h, w + shift, 3), dtype=np.uint8), (5, 5), 0)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    views = [View(name, K, np.eye(3), np.array([-x, 0.0, 0.0]), np.ascontiguousarray(texture[:, s:s + w]), frozenset())
             for name, x, s in (("a.jpg", 0.0, 0), ("b.jpg", baseline, shift))]
    depth = pair_depth(PosedViews(views, np.zeros((0, 3)), {}), 0, 1, scene_depth=1.0)
    if baseline > 1:
        assert depth is None
    else:
        assert depth is not None and np.median(depth.depth[depth.depth > 0]) == pytest.approx(1.0, rel=0.02)
