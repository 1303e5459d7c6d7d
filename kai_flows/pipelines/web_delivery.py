"""`web-delivery`: a model becomes a static, self-contained web bundle (levels of detail, a vendored viewer page
that picks a level by the device, a poster, a manifest with sizes and sha256), ready to serve from S3 or a CDN."""

from __future__ import annotations

from kai_flows.pipeline import Pipeline
from kai_flows.pipelines.mobile_optimization import add_levels
from kai_steps.web_delivery import web_delivery


def build() -> Pipeline:
    p = Pipeline(
        "web-delivery",
        description="A static web bundle of a model: levels of detail, an offline viewer page, poster and manifest",
        queue="batch",
    )
    _, package = add_levels(p)
    title = p.param("title", str, default="3D model", description="the page's title")
    bundle = p.task(web_delivery, package=package["package"], title=title)
    p.output("bundle", bundle["bundle"])
    return p
