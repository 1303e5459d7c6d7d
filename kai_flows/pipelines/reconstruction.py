"""`reconstruction` and `radiance-field`: photos in, a 3D model out (the deployment guide's reconstruction template).

quality gate (fan-out) -> verdict branches with `when`:
  reject  -> a rejection report, nothing else runs;
  enhance -> preprocessing with enhancement, then as proceed;
  proceed -> preprocess -> camera poses (pycolmap SfM) -> SURFACE -> texture -> format conversion -> finalize.
SURFACE is dense points (SGBM + TSDF) and a Poisson mesh in `reconstruction`, and a radiance field (torch, on a
GPU pool; CPU allowed) with marching-cubes extraction in `radiance-field`.
The texture step bakes a UV-atlas texture from the photos onto the surface (``texture=false``: vertex colours only).
The exit handler writes a failure report whenever the run does not succeed, saying where and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kai_flows.pipeline import (
    WORKFLOW_FAILURES,
    WORKFLOW_NAME,
    WORKFLOW_STATUS,
    ArtifactRef,
    ParamRef,
    Pipeline,
    Task,
    json_object,
    task_times,
)
from kai_steps.camera_poses import camera_poses
from kai_steps.convert import convert
from kai_steps.finalize import finalize
from kai_steps.mesh import mesh
from kai_steps.plan import QualityTier, plan_reconstruction
from kai_steps.point_cloud import point_cloud
from kai_steps.preprocess import preprocess
from kai_steps.quality import aggregate_quality, assess_image, list_images
from kai_steps.radiance_field import DEFAULT_MIN_PSNR_GAIN, field_mesh, radiance_field
from kai_steps.texture import texture


@dataclass
class Front:
    """What the shared first half hands to a surface: posed images and the plan."""

    gate: Task
    images: ArtifactRef  # the photos as uploaded (the report shows the flagged ones)
    plan: Task
    preprocessed: ArtifactRef
    poses: Task
    deterministic: ParamRef


def _front(p: Pipeline) -> Front:
    images = p.input_artifact("images", "folder of photos (optionally with K.txt intrinsics)")
    tier = p.param("quality_tier", QualityTier, default="standard",
                   description="draft, standard or high: working resolution, dense density, face budget")
    min_registered = p.param("min_registered_fraction", float, default=0.6,
                             description="fail when SfM registers a smaller fraction of the images")
    # On by default: it costs little (bench/determinism.py) and a re-run or resume that changes the model is a surprise.
    deterministic = p.param("deterministic", bool, default=True,
                            description="same photos and parameters give byte-identical outputs: SfM mapping and "
                                        "Poisson meshing run on one thread; false uses every thread")
    # The quality gate: one assessment per image, in parallel, then a verdict.
    listed = p.task(list_images, images=images)
    name = p.each(listed["names"])
    scored = p.task(assess_image, image_name=name, image=images.sub(name))
    gate = p.task(aggregate_quality, name="quality-gate", images=images, scores=scored.result)
    verdict = gate["verdict"]
    # The rejection and success reports leave out the run's (random) name: same photos, same report bytes.
    p.task(finalize, name="report-rejection", workflow_status="Rejected", failures=gate["reasons"],
           metrics=gate.result, pipeline=p.name, quality=gate["report"], images=images, when=verdict == "reject")
    plan = p.task(plan_reconstruction, quality_tier=tier, verdict=verdict, photos=gate["usable"],
                  when=verdict != "reject")
    # `.Succeeded`: when the plan is skipped (rejected set) everything after it is Omitted, not run.
    pre = p.task(preprocess, images=images, max_image_size=plan["max_image_size"], enhance=plan["enhance"],
                 depends=f"{plan.name}.Succeeded")
    poses = p.task(camera_poses, images=pre["out"], max_image_size=plan["max_image_size"],
                   min_registered_fraction=min_registered, deterministic=deterministic,
                   memory=plan["camera_poses_memory"])
    return Front(gate, images, plan, pre["out"], poses, deterministic)


def _tail(p: Pipeline, front: Front, surface: Task, surface_metrics: dict[str, ParamRef],
          surface_tasks: tuple[Task, ...], report_inputs: dict[str, ArtifactRef] | None = None) -> None:
    formats = p.param("formats", list[str], default=["glb", "obj", "ply", "stl", "usdz"],
                      description="model formats to export")
    draco = p.param("draco", bool, default=False, description="Draco-compress the glb")
    scale = p.param("meters_per_unit", float, default=0.0,
                    description="the model's scale in metres per unit when known (e.g. from a measured distance); "
                                "0: unknown, the glb and usdz show the model 1 m across and say so")
    textured = p.param("texture", bool, default=True,
                       description="bake a texture from the photos (size by quality tier); false: vertex colours")
    tex = p.task(texture, mesh=surface["mesh"], images=front.preprocessed, sparse=front.poses["sparse"],
                 texture_size=front.plan["texture_size"], face_budget=front.plan["texture_face_budget"],
                 max_image_size=front.plan["max_image_size"], enabled=textured)
    models = p.task(convert, mesh=tex["textured"], formats=formats, draco=draco, meters_per_unit=scale)
    pre = p.tasks["preprocess"]
    final = p.task(finalize, models=models["models"], workflow_status="Succeeded", sparse=front.poses["sparse"],
                   mesh=surface["mesh"], quality=front.gate["report"], images=front.images, **(report_inputs or {}),
                   metrics=json_object(quality=front.gate.result, preprocess=pre.result,
                                       camera_poses=front.poses.result, **surface_metrics, texture=tex.result,
                                       convert=models.result),
                   # Each step's wall time as Argo records it (the fan-out of photo assessments has none in Argo's
                   # scope); the report keeps them out of its deterministic pages (timings.json).
                   timings=task_times(p.tasks["list-images"], front.gate, front.plan, pre, front.poses,
                                      *surface_tasks, tex, models),
                   pipeline=p.name)
    on_failure = p.on_exit(finalize, when=WORKFLOW_STATUS != "Succeeded", workflow_status=WORKFLOW_STATUS,
                           failures=WORKFLOW_FAILURES, workflow_name=WORKFLOW_NAME, pipeline=p.name)
    p.output("quality", front.gate["report"])
    p.output("cameras", front.poses["sparse"])
    p.output("mesh", surface["mesh"])
    p.output("textured", tex["textured"])
    p.output("models", models["models"])
    p.output("report", final["report"])
    p.output("rejection", p.tasks["report-rejection"]["report"])
    p.output("failure-report", on_failure["report"])


def build() -> Pipeline:
    p = Pipeline(
        "reconstruction",
        description="Reconstruct a textured 3D model from photos: quality gate, SfM, dense points, mesh, export",
        queue="batch",
    )
    front = _front(p)
    method = p.param("mesh_method", Literal["poisson", "tsdf"], default="poisson",
                     description="surface from the dense points (poisson) or the fused depth maps (tsdf)")
    dense = p.task(point_cloud, images=front.preprocessed, sparse=front.poses["sparse"],
                   max_image_size=front.plan["dense_image_size"], density=front.plan["density"],
                   memory=front.plan["point_cloud_memory"])
    surface = p.task(mesh, dense=dense["dense"], method=method, face_budget=front.plan["face_budget"],
                     deterministic=front.deterministic)
    _tail(p, front, surface, {"point_cloud": dense.result, "mesh": surface.result}, (dense, surface))
    return p


def build_radiance_field() -> Pipeline:
    p = Pipeline(
        "radiance-field",
        description="Reconstruct from photos through a radiance field (GPU when present) and marching cubes",
        queue="batch",
    )
    front = _front(p)
    iterations = p.param("iterations", int, default=1500, description="optimisation steps of the radiance field")
    grid = p.param("grid_size", int, default=96, description="voxels per side of the density and colour grids")
    gain = p.param("min_psnr_gain", float, default=DEFAULT_MIN_PSNR_GAIN,
                   description="fail when the field's held-out PSNR does not beat a constant colour by this many dB "
                               "(-100 lets any field through)")
    field = p.task(radiance_field, images=front.preprocessed, sparse=front.poses["sparse"], iterations=iterations,
                   grid_size=grid, min_psnr_gain=gain)
    surface_from = p.param("field_surface", Literal["density", "depth"], default="density",
                           description="the mesh from marching cubes on the field's opacity (density: closed) or "
                                       "the training cameras' depth fused in a TSDF (depth: closer, with holes)")
    surface = p.task(field_mesh, field=field["field"], face_budget=front.plan["face_budget"],
                     surface_from=surface_from)
    # The report shows the held-out photos beside the field's renders of them.
    _tail(p, front, surface, {"radiance_field": field.result, "mesh": surface.result}, (field, surface),
          {"held_out": field["field"].sub("held_out")})
    return p
