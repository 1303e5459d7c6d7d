"""`mobile-optimization`: a model becomes levels of detail, a Draco-compressed glb and a usdz within size budgets."""

from __future__ import annotations

from kai_flows.pipeline import Pipeline
from kai_steps.mobile import mobile_lods, mobile_package


def build() -> Pipeline:
    p = Pipeline(
        "mobile-optimization",
        description="Levels of detail, Draco glb and usdz within size budgets for mobile viewers",
        queue="batch",
    )
    models = p.input_artifact("models", "a folder holding the model (ply with vertex colours preferred, glb or obj)")
    max_faces = p.param("max_faces", int, default=100_000, description="face count of the finest level of detail")
    glb_budget = p.param("glb_budget_kb", int, default=2048, description="largest acceptable glb, in KB")
    usdz_budget = p.param("usdz_budget_kb", int, default=4096, description="largest acceptable usdz, in KB")
    scale = p.param("meters_per_unit", float, default=0.0,
                    description="the model's scale in metres per unit when known; 0: the one convert recorded, "
                                "else unknown (shown 1 m across)")
    lods = p.task(mobile_lods, models=models, max_faces=max_faces)
    package = p.task(mobile_package, lods=lods["lods"], glb_budget_kb=glb_budget, usdz_budget_kb=usdz_budget,
                     meters_per_unit=scale)
    p.output("lods", lods["lods"])
    p.output("package", package["package"])
    return p
