"""`image-quality`: score every photo of a folder in parallel, then decide whether it is worth reconstructing."""

from __future__ import annotations

from kai_flows.pipeline import Pipeline
from kai_steps.quality import aggregate_quality, assess_image, list_images


def build() -> Pipeline:
    p = Pipeline(
        "image-quality",
        description="Assess a photo set (blur, exposure, resolution, duplicates, overlap) and give a verdict",
        queue="interactive",
    )
    images = p.input_artifact("images", "folder of photos")
    min_images = p.param("min_images", int, default=3, description="fewest usable images to proceed")
    min_sharpness = p.param("min_sharpness", float, default=40.0,
                            description="variance of the Laplacian below which an image is blurry")
    listed = p.task(list_images, images=images)
    name = p.each(listed["names"])
    scored = p.task(assess_image, image_name=name, image=images.sub(name))
    verdict = p.task(aggregate_quality, images=images, scores=scored.result, min_images=min_images,
                     min_sharpness=min_sharpness)
    p.output("report", verdict["report"])
    return p
