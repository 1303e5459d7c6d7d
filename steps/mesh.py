"""A coloured surface mesh from the dense step's output, cleaned and decimated to a face budget.

``poisson``: screened Poisson on the oriented points, then trimmed where the surface is poorly supported (low
Poisson density, or far from every input point). ``tsdf``: the TSDF's marching-cubes surface written by
``point_cloud``. Either way: degenerate faces, non-manifold edges and small floating components are removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError
from kai_steps._geometry import bbox_diagonal, clean_mesh, decimate
from kai_steps._io import staged_dir, write_json

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
o3d = lazy.load("open3d")
scipy = lazy.load("scipy")


class MeshSummary(BaseModel):
    method: str
    num_vertices: int
    num_faces: int
    watertight: bool


def _read_points(dense: Path) -> o3d.geometry.PointCloud:
    path = Path(dense) / "points.ply"
    if not path.is_file():
        raise ReconstructionInputError(f"{path} does not exist: the dense input holds no points.ply")
    pcd = o3d.io.read_point_cloud(str(path))
    if len(pcd.points) < 100:
        raise ReconstructionInputError(f"{path} holds {len(pcd.points)} points; a surface needs at least 100")
    return pcd


def _poisson(pcd: o3d.geometry.PointCloud, voxel: float, trim_quantile: float,
             deterministic: bool) -> o3d.geometry.TriangleMesh:
    pts = np.asarray(pcd.points)
    if not pcd.has_normals():
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(20))
        pcd.orient_normals_towards_camera_location(pts.mean(0) + np.array([0.0, 0.0, bbox_diagonal(pts)]))
    # One octree cell per ~voxel across the cloud: finer depth only fits noise.
    depth = int(np.clip(np.ceil(np.log2(bbox_diagonal(pts) / max(voxel, 1e-9))), 6, 11))
    # Open3D's threaded Poisson sums in scheduling order: the surface differs in its last bits on every run (and by
    # tens of faces after trimming and cleaning). On one thread it is the same every time.
    mesh, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        pcd, depth=depth, linear_fit=True, n_threads=1 if deterministic else -1)
    dens = np.asarray(dens)
    # Trim the balloon Poisson closes the surface with: low-density vertices and those far from any point.
    far, _ = scipy.spatial.cKDTree(pts).query(np.asarray(mesh.vertices), workers=-1)
    drop = (dens < np.quantile(dens, trim_quantile)) | (far > 3.0 * voxel)
    mesh.remove_vertices_by_mask(drop)
    return mesh


# Peak RSS measured: 0.75 GiB (100k points -> 200k faces), 0.95 GiB (240k points -> 500k faces).
@step(image="geometry", cpu="2", memory="2Gi", pool="cpu-optimized", timeout="30m")
def mesh(
    dense: In[Path],
    mesh: Out[Path],
    method: Literal["poisson", "tsdf"] = "poisson",
    face_budget: int = 200000,
    trim_quantile: float = 0.05,
    deterministic: bool = True,
) -> MeshSummary:
    """Write ``mesh/mesh.ply`` (vertex colours and normals) and ``mesh/summary.json``; with ``deterministic`` the
    same points always give the same bytes (Poisson on one thread)."""
    dense = Path(dense)
    if method not in ("poisson", "tsdf"):
        raise ReconstructionInputError(f"mesh method must be 'poisson' or 'tsdf', not {method!r}")
    if face_budget < 100:
        raise ReconstructionInputError(f"face_budget {face_budget} is too small; give at least 100 faces")
    if not dense.is_dir():
        raise ReconstructionInputError(f"dense input {dense} is not a folder")
    meta_path = dense / "summary.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    pcd = _read_points(dense)
    if method == "tsdf":
        path = dense / "tsdf_mesh.ply"
        if not path.is_file():
            raise ReconstructionInputError(f"{path} does not exist: method 'tsdf' needs the dense step's TSDF mesh")
        surface = o3d.io.read_triangle_mesh(str(path))
    else:
        spacing = float(meta.get("voxel_size") or np.mean(pcd.compute_nearest_neighbor_distance()))
        surface = _poisson(pcd, spacing, trim_quantile, deterministic)
    surface = decimate(clean_mesh(surface), face_budget)
    if len(surface.triangles) == 0:
        raise ReconstructionInputError(f"no surface survived cleaning of the {len(pcd.points)} points in {dense}")
    surface.compute_vertex_normals()
    if surface.has_vertex_colors():  # Poisson's colour interpolation overshoots [0, 1] near sharp edges
        surface.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(surface.vertex_colors), 0.0, 1.0))
    with staged_dir(Path(mesh)) as out:
        o3d.io.write_triangle_mesh(str(out / "mesh.ply"), surface, write_ascii=False, write_vertex_normals=True,
                                   write_vertex_colors=True)
        summary = MeshSummary(method=method, num_vertices=len(surface.vertices), num_faces=len(surface.triangles),
                              watertight=bool(surface.is_watertight()))
        write_json(out / "summary.json", {**summary.model_dump(), "face_budget": face_budget,
                                          "viewer_from_model": meta.get("viewer_from_model")})
    return summary
