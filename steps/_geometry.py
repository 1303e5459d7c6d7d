"""Geometry helpers shared by the dense, mesh and report steps: a viewer-friendly frame, mesh cleaning, metrics."""

from __future__ import annotations

from dataclasses import dataclass

import lazy_loader as lazy

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
fast_simplification = lazy.load("fast_simplification")
np = lazy.load("numpy")
o3d = lazy.load("open3d")
scipy = lazy.load("scipy")
trimesh = lazy.load("trimesh")



def viewer_rotation(cam_axes: np.ndarray, cam_downs: np.ndarray) -> np.ndarray:
    """Rotation taking the reconstruction's world to a glTF-like frame: +Y up (against the cameras' image-down
    axis), cameras on the +Z side looking towards -Z. ``cam_axes``/``cam_downs``: per-camera world directions."""
    up = -np.mean(cam_downs, axis=0)
    up /= np.linalg.norm(up) or 1.0
    look = np.mean(cam_axes, axis=0)
    z = -(look - np.dot(look, up) * up)
    if np.linalg.norm(z) < 1e-6:  # cameras looking straight down: any horizontal direction will do
        z = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    return np.stack([x, up, z])


def _row_order(*columns: np.ndarray) -> np.ndarray:
    """Indices sorting rows by every column of the given (N, k) arrays, first array's first column most
    significant: a total order, whatever order the rows came in."""
    present = [c.reshape(len(c), -1) for c in columns if len(c)]
    if not present:
        return np.zeros(0, dtype=np.int64)
    return np.lexsort(np.concatenate(present, axis=1).T[::-1])


def canonical_points(pcd: o3d.geometry.PointCloud) -> o3d.geometry.PointCloud:
    """The cloud with its points sorted by position (then normal, colour). Open3D's parallel TSDF extraction
    emits the same points in a different order each run; everything downstream (outlier removal, normals,
    Poisson) depends on that order."""
    attrs = [np.asarray(a) for a in (pcd.points, pcd.normals, pcd.colors)]
    order = _row_order(*attrs)
    out = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(attrs[0][order]))
    if pcd.has_normals():
        out.normals = o3d.utility.Vector3dVector(attrs[1][order])
    if pcd.has_colors():
        out.colors = o3d.utility.Vector3dVector(attrs[2][order])
    return out


def canonical_mesh(mesh: o3d.geometry.TriangleMesh) -> o3d.geometry.TriangleMesh:
    """The mesh with vertices sorted by position (then normal, colour) and triangles sorted, each starting at its
    lowest vertex (winding kept): the same surface gives the same arrays whatever order a parallel extraction
    produced it in."""
    V, N, C = (np.asarray(a) for a in (mesh.vertices, mesh.vertex_normals, mesh.vertex_colors))
    order = _row_order(V, N, C)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    F = rank[np.asarray(mesh.triangles)]
    if len(F):
        shift = np.argmin(F, axis=1)[:, None]
        F = np.take_along_axis(F, (np.arange(3) + shift) % 3, axis=1)  # a cyclic shift keeps the winding
        F = F[np.lexsort(F.T[::-1])]
    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(V[order]),
                                    o3d.utility.Vector3iVector(F.astype(np.int32).reshape(-1, 3)))
    if mesh.has_vertex_normals():
        out.vertex_normals = o3d.utility.Vector3dVector(N[order])
    if mesh.has_vertex_colors():
        out.vertex_colors = o3d.utility.Vector3dVector(C[order])
    return out


def clean_mesh(mesh: o3d.geometry.TriangleMesh, min_component: float = 0.02, detached_component: float = 0.25,
               max_gap: float = 0.05) -> o3d.geometry.TriangleMesh:
    """Drop degenerate/duplicate faces, non-manifold edges, unreferenced vertices and floating debris: connected
    components smaller than ``min_component`` of the largest one, and those smaller than ``detached_component``
    of it that float more than ``max_gap`` of its bounding-box diagonal away from it (clouds or sky that the
    dense step matched, e.g. above sceaux_castle's roof). Large or nearby parts of the scene stay."""
    mesh.remove_degenerate_triangles()
    mesh.remove_duplicated_triangles()
    mesh.remove_duplicated_vertices()
    mesh.remove_non_manifold_edges()
    if len(mesh.triangles):
        labels, counts, _ = mesh.cluster_connected_triangles()
        labels, counts = np.asarray(labels), np.asarray(counts)
        drop = counts < max(1, min_component * counts.max())
        drop |= _detached(mesh, labels, counts, detached_component, max_gap, already=drop)
        mesh.remove_triangles_by_mask(drop[labels])
    mesh.remove_unreferenced_vertices()
    return mesh


def _detached(mesh: o3d.geometry.TriangleMesh, labels: np.ndarray, counts: np.ndarray, size: float,
              max_gap: float, already: np.ndarray) -> np.ndarray:
    """Per component: smaller than ``size`` of the largest and farther than ``max_gap`` of its diagonal from it
    (components in ``already`` are not examined)."""
    detached = np.zeros(len(counts), dtype=bool)
    candidates = np.flatnonzero((counts < size * counts.max()) & ~already)
    if not len(candidates):
        return detached
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    order = np.argsort(labels, kind="stable")  # faces grouped by component once, not one scan per component
    bounds = np.searchsorted(labels[order], np.arange(len(counts) + 1))

    def points(c: int) -> np.ndarray:
        return vertices[np.unique(faces[order[bounds[c]:bounds[c + 1]]])]

    main = points(int(np.argmax(counts)))
    tree, limit = scipy.spatial.cKDTree(main), max_gap * bbox_diagonal(main)
    for c in candidates:
        gap, _ = tree.query(points(c), workers=-1)
        detached[c] = gap.min() > limit
    return detached


def decimate(mesh: o3d.geometry.TriangleMesh, face_budget: int) -> o3d.geometry.TriangleMesh:
    """Quadric decimation (fast-simplification, ~10x Open3D's) to at most ``face_budget`` faces; vertex colours
    re-sampled from the nearest original vertex; edges the collapses made non-manifold are removed again."""
    if len(mesh.triangles) <= face_budget:
        return mesh
    V, F = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    v2, f2 = fast_simplification.simplify(V, F, target_count=int(face_budget))
    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v2), o3d.utility.Vector3iVector(f2.astype(np.int32)))
    if mesh.has_vertex_colors() and len(v2):
        _, idx = scipy.spatial.cKDTree(V).query(v2, workers=-1)
        out.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors)[idx])
    out.remove_degenerate_triangles()
    out.remove_duplicated_triangles()
    out.remove_non_manifold_edges()
    out.remove_unreferenced_vertices()
    return out


def bbox_diagonal(vertices: np.ndarray) -> float:
    return float(np.linalg.norm(vertices.max(0) - vertices.min(0)))


@dataclass(frozen=True)
class MeshScores:
    tau: float
    precision: float
    recall: float
    fscore: float
    chamfer: float  # mean of both nearest-neighbour distance means, in mesh units


def sample_surface(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> np.ndarray:
    """Points spread uniformly by area over the surface (fixed seed: repeatable scores)."""
    if len(mesh.faces) == 0:
        raise ValueError("cannot sample a mesh with no faces")
    pts, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(pts)


def surface_distance(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Exact distance from each point to the nearest point of the mesh surface (Open3D RaycastingScene)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy().astype(float)


def mesh_scores(recon: trimesh.Trimesh, gt: trimesh.Trimesh, taus: list[float], samples: int = 200_000,
                seed: int = 0, exact: bool = True) -> list[MeshScores]:
    """Tanks-and-Temples style precision/recall/F-score at each distance ``tau`` and the Chamfer distance.

    Points are sampled uniformly on each surface. With ``exact`` each sample's distance is to the other *surface*
    (no bias from the sample spacing, which at 200k samples can exceed a small tau); otherwise to the other
    sample set through a scipy.spatial.cKDTree, the classic Tanks-and-Temples definition."""
    r = sample_surface(recon, samples, seed)
    g = sample_surface(gt, samples, seed + 1)
    if exact:
        d_rg, d_gr = surface_distance(r, gt), surface_distance(g, recon)
    else:
        d_rg, _ = scipy.spatial.cKDTree(g).query(r, workers=-1)
        d_gr, _ = scipy.spatial.cKDTree(r).query(g, workers=-1)
    # d_rg: how close the reconstruction lies to the truth (precision); d_gr: how much truth is covered (recall).
    chamfer = float((d_rg.mean() + d_gr.mean()) / 2)
    out = []
    for tau in taus:
        p, rc = float(np.mean(d_rg < tau)), float(np.mean(d_gr < tau))
        out.append(MeshScores(tau, p, rc, 2 * p * rc / (p + rc) if p + rc > 0 else 0.0, chamfer))
    return out
