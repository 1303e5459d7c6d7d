"""`reconstruction`: photos in, a 3D model out (the deployment guide's reconstruction template).

quality gate (fan-out) -> verdict branches with `when`:
  reject  -> a rejection report, nothing else runs;
  enhance -> preprocessing with enhancement, then as proceed;
  proceed -> preprocess -> camera poses (pycolmap SfM) -> dense point cloud -> mesh -> format conversion -> finalize.
The exit handler writes a failure report whenever the run does not succeed, saying where and why.
"""

from __future__ import annotations

from typing import Literal

from kai_flows.pipeline import WORKFLOW_FAILURES, WORKFLOW_NAME, WORKFLOW_STATUS, Pipeline, json_object
from steps.camera_poses import camera_poses
from steps.convert import convert
from steps.finalize import finalize
from steps.mesh import mesh
from steps.plan import QualityTier, plan_reconstruction
from steps.point_cloud import point_cloud
from steps.preprocess import preprocess
from steps.quality import aggregate_quality, assess_image, list_images


def build() -> Pipeline:
    p = Pipeline(
        "reconstruction",
        description="Reconstruct a textured 3D model from photos: quality gate, SfM, dense points, mesh, export",
        queue="batch",
    )
    images = p.input_artifact("images", "folder of photos (optionally with K.txt intrinsics)")
    tier = p.param("quality_tier", QualityTier, default="standard",
                   description="draft, standard or high: working resolution, dense density, face budget")
    method = p.param("mesh_method", Literal["poisson", "tsdf"], default="poisson",
                     description="surface from the dense points (poisson) or the fused depth maps (tsdf)")
    formats = p.param("formats", list[str], default=["glb", "obj", "ply", "stl", "usdz"],
                      description="model formats to export")
    draco = p.param("draco", bool, default=False, description="Draco-compress the glb")
    min_registered = p.param("min_registered_fraction", float, default=0.6,
                             description="fail when SfM registers a smaller fraction of the images")

    # The quality gate: one assessment per image, in parallel, then a verdict.
    listed = p.task(list_images, images=images)
    name = p.each(listed["names"])
    scored = p.task(assess_image, image_name=name, image=images.sub(name))
    gate = p.task(aggregate_quality, name="quality-gate", images=images, scores=scored.result)
    verdict = gate["verdict"]

    p.task(finalize, name="report-rejection", workflow_status="Rejected", failures=gate["reasons"],
           metrics=gate.result, workflow_name=WORKFLOW_NAME, when=verdict == "reject")

    plan = p.task(plan_reconstruction, quality_tier=tier, verdict=verdict, when=verdict != "reject")
    # `.Succeeded`: when the plan is skipped (rejected set) everything after it is Omitted, not run.
    pre = p.task(preprocess, images=images, max_image_size=plan["max_image_size"], enhance=plan["enhance"],
                 depends=f"{plan.name}.Succeeded")
    poses = p.task(camera_poses, images=pre["out"], max_image_size=plan["max_image_size"],
                   min_registered_fraction=min_registered)
    dense = p.task(point_cloud, images=pre["out"], sparse=poses["sparse"], max_image_size=plan["dense_image_size"],
                   density=plan["density"])
    surface = p.task(mesh, dense=dense["dense"], method=method, face_budget=plan["face_budget"])
    models = p.task(convert, mesh=surface["mesh"], formats=formats, draco=draco)
    final = p.task(finalize, models=models["models"], workflow_status="Succeeded", workflow_name=WORKFLOW_NAME,
                   metrics=json_object(quality=gate.result, preprocess=pre.result, camera_poses=poses.result,
                                       point_cloud=dense.result, mesh=surface.result, convert=models.result))

    on_failure = p.on_exit(finalize, when=WORKFLOW_STATUS != "Succeeded", workflow_status=WORKFLOW_STATUS,
                           failures=WORKFLOW_FAILURES, workflow_name=WORKFLOW_NAME)
    p.output("quality", gate["report"])
    p.output("cameras", poses["sparse"])
    p.output("mesh", surface["mesh"])
    p.output("models", models["models"])
    p.output("report", final["report"])
    p.output("rejection", p.tasks["report-rejection"]["report"])
    p.output("failure-report", on_failure["report"])
    return p
