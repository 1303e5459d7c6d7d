"""Accuracy of a reconstruction against ground truth: camera poses after Sim(3) alignment, mesh F-score.

Used by `kai-flows demo` (`make run`), the accuracy tests and the benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pycolmap
import trimesh

from kai_steps._colmap import find_model
from kai_steps._geometry import bbox_diagonal, mesh_scores
from kai_steps._metrics import pose_errors, read_strecha_dir


@dataclass(frozen=True)
class Accuracy:
    registered: int
    total: int
    position_error_mean: float  # ground-truth units
    position_error_max: float
    rotation_error_mean_deg: float
    fscore_1pct: float | None = None
    fscore_05pct: float | None = None
    chamfer: float | None = None
    diagonal: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def model_to_ground_truth(rec: pycolmap.Reconstruction, gt_cameras: Path) -> pycolmap.Sim3d:
    """The Sim(3) taking the model's world onto the ground-truth cameras' world (camera centres, Umeyama)."""
    gt = read_strecha_dir(gt_cameras)
    images = [i for i in rec.images.values() if i.has_pose and i.name in gt]
    if len(images) < 3:
        raise ValueError(f"only {len(images)} registered images have ground-truth cameras; 3 are needed to align")
    return pycolmap.estimate_sim3d(np.array([i.projection_center() for i in images]),
                                   np.array([gt[i.name].C for i in images]))


def mesh_in_ground_truth(mesh_dir: Path, sim: pycolmap.Sim3d) -> trimesh.Trimesh:
    """The `mesh` step's output moved into the ground-truth frame.

    The mesh step writes in a viewer frame (+Y up) and records `viewer_from_model` in its summary.json.
    """
    mesh = trimesh.load(mesh_dir / "mesh.ply", force="mesh", process=False)
    summary = json.loads((mesh_dir / "summary.json").read_text())
    viewer_from_model = np.array(summary.get("viewer_from_model", np.eye(3)))
    model = np.asarray(mesh.vertices) @ viewer_from_model  # rows: v = R m  ->  m = R^T v
    vertices = sim.scale * model @ sim.rotation.matrix().T + np.asarray(sim.translation)
    return trimesh.Trimesh(vertices, mesh.faces, process=False)


def evaluate(sparse: Path, gt_cameras: Path, mesh_dir: Path | None = None, gt_mesh: Path | None = None,
             samples: int = 200_000) -> Accuracy:
    rec = pycolmap.Reconstruction(str(find_model(sparse)))
    errors = pose_errors(rec, read_strecha_dir(gt_cameras))
    result = Accuracy(registered=rec.num_reg_images(), total=len(read_strecha_dir(gt_cameras)),
                      position_error_mean=errors.position_mean, position_error_max=errors.position_max,
                      rotation_error_mean_deg=errors.rotation_mean_deg)
    if mesh_dir is None or gt_mesh is None:
        return result
    recon = mesh_in_ground_truth(mesh_dir, model_to_ground_truth(rec, gt_cameras))
    truth = trimesh.load(gt_mesh, force="mesh", process=False)
    diagonal = bbox_diagonal(np.asarray(truth.vertices))
    s1, s05 = mesh_scores(recon, truth, [0.01 * diagonal, 0.005 * diagonal], samples=samples)
    return Accuracy(**{**asdict(result), "fscore_1pct": s1.fscore, "fscore_05pct": s05.fscore,
                       "chamfer": s1.chamfer, "diagonal": diagonal})
