"""The Kai pipelines, by name. Each module's `build()` returns a `kai_flows.pipeline.Pipeline`."""

from __future__ import annotations

from collections.abc import Callable

from kai_flows.pipeline import Pipeline
from kai_flows.pipelines import image_quality, mobile_optimization, reconstruction, web_delivery

PIPELINES: dict[str, Callable[[], Pipeline]] = {
    "image-quality": image_quality.build,
    "mobile-optimization": mobile_optimization.build,
    "radiance-field": reconstruction.build_radiance_field,
    "reconstruction": reconstruction.build,
    "web-delivery": web_delivery.build,
}
