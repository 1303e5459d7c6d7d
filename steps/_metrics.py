"""Camera accuracy against ground truth: Strecha ``.camera`` files, Sim(3) alignment, position/rotation errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lazy_loader as lazy

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
pycolmap = lazy.load("pycolmap")



@dataclass(frozen=True)
class StrechaCamera:
    """One ground-truth camera: P = K [R^T | -R^T C] (R is camera-to-world, C the centre)."""

    K: np.ndarray
    R: np.ndarray
    C: np.ndarray
    width: int
    height: int


def read_strecha_camera(path: Path) -> StrechaCamera:
    v = np.array(Path(path).read_text().split(), dtype=float)
    if v.size != 26:
        raise ValueError(f"{path}: expected 26 numbers in a Strecha .camera file, found {v.size}")
    return StrechaCamera(v[0:9].reshape(3, 3), v[12:21].reshape(3, 3), v[21:24], int(v[24]), int(v[25]))


def write_strecha_camera(path: Path, cam: StrechaCamera) -> None:
    rows = [*cam.K, np.zeros(3), *cam.R, cam.C]
    text = "".join(" ".join(f"{x:.10g}" for x in row) + "\n" for row in rows)
    Path(path).write_text(text + f"{cam.width} {cam.height}\n")


def read_strecha_dir(folder: Path) -> dict[str, StrechaCamera]:
    """``NAME.camera`` files keyed by image name (``0000.jpg.camera`` -> ``0000.jpg``)."""
    return {p.name.removesuffix(".camera"): read_strecha_camera(p) for p in sorted(Path(folder).glob("*.camera"))}


@dataclass(frozen=True)
class PoseErrors:
    matched: int
    position_mean: float  # in ground-truth units (metres for Strecha)
    position_max: float
    rotation_mean_deg: float
    rotation_max_deg: float
    scale: float  # gt units per reconstruction unit


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def pose_errors(rec: pycolmap.Reconstruction, gt: dict[str, StrechaCamera]) -> PoseErrors:
    """Sim(3)-align the reconstruction's camera centres onto the ground truth and measure what is left."""
    names, est_c, est_R = [], [], []
    for img in rec.images.values():
        if img.has_pose and img.name in gt:
            names.append(img.name)
            est_c.append(img.projection_center())
            est_R.append(img.cam_from_world().rotation.matrix())  # world-to-camera
    if len(names) < 3:
        raise ValueError(f"only {len(names)} registered images have ground truth; need 3 to align")
    gt_c = np.array([gt[n].C for n in names])
    sim = pycolmap.estimate_sim3d(np.array(est_c), gt_c)
    if sim is None:
        raise ValueError("Sim(3) alignment to the ground-truth cameras failed (degenerate centres)")
    A = sim.rotation.matrix()
    aligned = sim.scale * np.array(est_c) @ A.T + sim.translation
    pos = np.linalg.norm(aligned - gt_c, axis=1)
    # est world-to-camera in gt frame: R_est A^T; gt world-to-camera: R_gt^T.
    rot = [_angle_deg(Re @ A.T @ gt[n].R) for n, Re in zip(names, est_R, strict=True)]
    return PoseErrors(len(names), float(pos.mean()), float(pos.max()), float(np.mean(rot)), float(np.max(rot)),
                      float(sim.scale))
