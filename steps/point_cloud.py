"""Dense point cloud on CPU: rectified-pair SGBM depth maps from the posed images, fused in a TSDF.

Each view is paired with its best stereo partners, the pair is rectified and matched with OpenCV's semi-global
block matcher, and every depth map is integrated into an Open3D VoxelBlockGrid. Surface points come out of the
TSDF only where enough depth maps agree (the visibility/consistency check), coloured and with outward normals;
statistical outliers are then removed. The cloud is rotated into a viewer frame (+Y up, cameras on +Z) and the
rotation is recorded in ``summary.json`` so metrics can map it back onto the model's world.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError, load_views
from kai_steps._geometry import canonical_mesh, canonical_points, viewer_rotation
from kai_steps._io import staged_dir, write_json
from kai_steps._stereo import depth_maps, fuse
from kai_steps.sizing import MEMORY_MAX

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
o3d = lazy.load("open3d")

# density -> (voxels across the scene's diagonal, stereo partners per view)
DENSITY = {"low": (256, 1), "medium": (400, 2), "high": (600, 3)}


class PointCloudSummary(BaseModel):
    num_points: int
    num_views: int
    num_depth_maps: int
    voxel_size: float


# Peak RSS measured: 0.85 GiB (11 views, 1000 px, medium), 1.5 GiB (30 views), 1.9 GiB (11 views, 1600 px, high).
# Sized per job (kai_steps.sizing): `memory` is what a task that does not plan gets.
@step(image="geometry", cpu="2", memory="4Gi", memory_max=MEMORY_MAX["point_cloud"], pool="memory-optimized",
      timeout="45m")
def point_cloud(
    images: In[Path],
    sparse: In[Path],
    dense: Out[Path],
    max_image_size: int = 1000,
    density: Literal["low", "medium", "high"] = "medium",
    min_views: float = 3.0,
) -> PointCloudSummary:
    """Dense coloured points (``dense/points.ply``), the TSDF surface (``dense/tsdf_mesh.ply``), ``summary.json``."""
    if density not in DENSITY:
        raise ReconstructionInputError(f"density must be one of {sorted(DENSITY)}, not {density!r}")
    if not Path(images).is_dir():
        raise ReconstructionInputError(f"images folder {images} does not exist")
    voxels_across, neighbours = DENSITY[density]
    pv = load_views(Path(images), Path(sparse), max_image_size)
    with tempfile.TemporaryDirectory(prefix="kai-depth-") as spill:
        maps, pairs = depth_maps(pv, neighbours, Path(spill))
        if not maps:
            raise ReconstructionInputError(
                f"no stereo pair of the {len(pv.views)} posed views gave a usable depth map "
                f"({len(pairs)} pairs tried): the views do not overlap enough or the poses are wrong")
        fusion = fuse(maps, voxels_across)
        valid = [round(float(np.mean(m.depth > 0)), 4) for m in maps]
    threshold = min(min_views, max(1.0, len(maps) - 1.0))
    pcd = canonical_points(fusion.grid.extract_point_cloud(weight_threshold=threshold).to_legacy())
    if len(pcd.points) >= 50:
        pcd, _ = pcd.remove_statistical_outlier(nb_neighbors=20, std_ratio=2.0)
    if len(pcd.points) == 0:
        raise ReconstructionInputError(
            f"the depth maps of {len(pv.views)} views did not agree anywhere (weight threshold {threshold})")
    mesh = canonical_mesh(fusion.grid.extract_triangle_mesh(weight_threshold=threshold).to_legacy())

    # TSDF colour averages can stray just outside [0, 1].
    pcd.colors = o3d.utility.Vector3dVector(np.clip(np.asarray(pcd.colors), 0.0, 1.0))
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors), 0.0, 1.0))
    rot = viewer_rotation(np.array([v.axis for v in pv.views]), np.array([v.R[1] for v in pv.views]))
    pcd.rotate(rot, center=(0, 0, 0))
    mesh.rotate(rot, center=(0, 0, 0))
    with staged_dir(Path(dense)) as out:
        o3d.io.write_point_cloud(str(out / "points.ply"), pcd, write_ascii=False)
        o3d.io.write_triangle_mesh(str(out / "tsdf_mesh.ply"), mesh, write_ascii=False)
        summary = PointCloudSummary(num_points=len(pcd.points), num_views=len(pv.views), num_depth_maps=len(maps),
                                    voxel_size=fusion.voxel)
        write_json(out / "summary.json", {
            **summary.model_dump(),
            "density": density,
            "max_image_size": max_image_size,
            "pairs": [[pv.views[i].name, pv.views[j].name] for i, j in pairs],
            "valid_fraction": valid,
            "camera_centers": (np.array([v.center for v in pv.views]) @ rot.T).round(6).tolist(),
            # x_viewer = rotation @ x_model: the inverse maps the cloud back onto the COLMAP model's world.
            "viewer_from_model": rot.round(12).tolist(),
        })
    return summary
