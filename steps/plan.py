"""Turn a quality tier into the settings of the reconstruction steps, in one place."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from kai_flows.step import step
from kai_steps.sizing import planned_memory

QualityTier = Literal["draft", "standard", "high"]


class ReconstructionPlan(BaseModel):
    max_image_size: int  # working resolution of preprocessing and SfM (longest side, pixels)
    dense_image_size: int  # resolution of the dense depth maps
    density: Literal["low", "medium", "high"]
    face_budget: int
    texture_size: int  # side of the square texture the texture step bakes
    # Faces of the textured model: the texture carries the detail (bench/texture.py: 50k textured beat 200k
    # vertex-coloured by 5 dB; 100k and 200k faces scored the same there, in larger files).
    texture_face_budget: int
    enhance: bool  # the quality gate asked for enhancement
    # Memory of the steps sized per job (kai_steps.sizing), from the usable photos and the working sizes.
    camera_poses_memory: str
    point_cloud_memory: str


PLANS: dict[str, dict[str, object]] = {
    "draft": {"max_image_size": 1000, "dense_image_size": 640, "density": "low", "face_budget": 50_000,
              "texture_size": 1024, "texture_face_budget": 50_000},
    "standard": {"max_image_size": 1600, "dense_image_size": 1000, "density": "medium",
                 "face_budget": 200_000, "texture_size": 2048, "texture_face_budget": 100_000},
    "high": {"max_image_size": 2400, "dense_image_size": 1600, "density": "high", "face_budget": 800_000,
             "texture_size": 4096, "texture_face_budget": 200_000},
}


@step(image="quality", cpu="100m", memory="128Mi", timeout="2m")
def plan_reconstruction(quality_tier: QualityTier = "standard", verdict: str = "proceed",
                        photos: int = 30) -> ReconstructionPlan:
    """Settings for `quality_tier`; `verdict` is the quality gate's (`enhance` switches enhancement on); `photos`
    (the gate's usable count) sizes the memory of camera-poses and point-cloud, and a job too large for them fails
    here, by name, before any work is spent on it."""
    if photos < 1:
        raise ValueError(f"photos must be at least 1, got {photos}")
    settings = PLANS[quality_tier]
    sfm_size, dense_size = settings["max_image_size"], settings["dense_image_size"]
    assert isinstance(sfm_size, int) and isinstance(dense_size, int)
    return ReconstructionPlan(
        **settings, enhance=verdict == "enhance",  # type: ignore[arg-type]
        camera_poses_memory=planned_memory("camera_poses", photos, sfm_size),
        point_cloud_memory=planned_memory("point_cloud", photos, dense_size),
    )
