"""Turn a quality tier into the settings of the reconstruction steps, in one place."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from kai_flows.step import step

QualityTier = Literal["draft", "standard", "high"]


class ReconstructionPlan(BaseModel):
    max_image_size: int  # working resolution of preprocessing and SfM (longest side, pixels)
    dense_image_size: int  # resolution of the dense depth maps
    density: Literal["low", "medium", "high"]
    face_budget: int
    enhance: bool  # the quality gate asked for enhancement


PLANS: dict[str, dict[str, object]] = {
    "draft": {"max_image_size": 1000, "dense_image_size": 640, "density": "low", "face_budget": 50_000},
    "standard": {"max_image_size": 1600, "dense_image_size": 1000, "density": "medium", "face_budget": 200_000},
    "high": {"max_image_size": 2400, "dense_image_size": 1600, "density": "high", "face_budget": 800_000},
}


@step(image="quality", cpu="100m", memory="128Mi", timeout="2m")
def plan_reconstruction(quality_tier: QualityTier = "standard", verdict: str = "proceed") -> ReconstructionPlan:
    """Settings for `quality_tier`; `verdict` is the quality gate's (`enhance` switches enhancement on)."""
    return ReconstructionPlan(**PLANS[quality_tier], enhance=verdict == "enhance")  # type: ignore[arg-type]
