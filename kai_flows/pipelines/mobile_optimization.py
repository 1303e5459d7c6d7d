"""`mobile-optimization`: a model becomes named levels of detail (preview, reduced, medium, full), each a Draco glb
and a usdz sized against AR Quick Look's and Scene Viewer's guidance, and the finest within size budgets."""

from __future__ import annotations

from kai_flows.pipeline import Pipeline
from kai_steps.mobile import mobile_lods, mobile_package

LEVELS = ["preview", "reduced", "medium", "full"]


def add_levels(p: Pipeline) -> tuple:
    """The model input, its levels and their package: shared with `web-delivery`."""
    models = p.input_artifact("models", "a folder holding the model (ply with vertex colours preferred, glb or obj; "
                                        "a textured glb/obj keeps a texture in every level)")
    levels = p.param("levels", list[str], default=LEVELS,
                     description="levels of detail to build: preview (<25k triangles), reduced (<50k), medium "
                                 "(<100k), full (<250k); a level the source is too small for is skipped")
    glb_budget = p.param("glb_budget_kb", int, default=2048, description="largest acceptable model.glb, in KB")
    usdz_budget = p.param("usdz_budget_kb", int, default=4096, description="largest acceptable model.usdz, in KB")
    scale = p.param("meters_per_unit", float, default=0.0,
                    description="the model's scale in metres per unit when known; 0: the one convert recorded, "
                                "else unknown (shown 1 m across)")
    lods = p.task(mobile_lods, models=models, levels=levels)
    package = p.task(mobile_package, lods=lods["lods"], glb_budget_kb=glb_budget, usdz_budget_kb=usdz_budget,
                     meters_per_unit=scale)
    return lods, package


def build() -> Pipeline:
    p = Pipeline(
        "mobile-optimization",
        description="Levels of detail (preview..full) as Draco glb and usdz, sized against mobile viewers' guidance",
        queue="batch",
    )
    lods, package = add_levels(p)
    p.output("lods", lods["lods"])
    p.output("package", package["package"])
    return p
