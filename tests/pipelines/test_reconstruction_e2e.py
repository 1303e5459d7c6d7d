"""The reconstruction pipeline, end to end through the local engine: its three branches and a real model.

Each run goes through the committed YAML (workflow_templates/reconstruction.yaml), real steps, real S3.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kai_flows.engine.runner import RunResult, run_pipeline
from kai_flows.evaluate import evaluate
from kai_steps.sample_scene import render_sample_scene
from tests.conftest import REPO


def phases(result: RunResult) -> dict[str, str]:
    """Node phases by task path: "finalize", "onExit.finalize", "assess-image(0:000.jpg)"."""
    return {n.name.split(".", 1)[1]: n.phase for n in result.nodes.values() if "." in n.name}


def _run(tmp_path: Path, images: Path, **params: str) -> RunResult:
    return run_pipeline(REPO / "workflow_templates" / "reconstruction.yaml", parameters=params,
                        inputs={"images": images}, out=tmp_path / "out", progress=False,
                        cache=tmp_path / "cache")


def _two_photos(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = cv2.resize(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (800, 600), interpolation=cv2.INTER_NEAREST)
        Image.fromarray(img).save(folder / f"{i}.jpg")
    return folder


def test_too_few_photos_are_rejected_with_a_report_and_nothing_else_runs(tmp_path):
    folder = _two_photos(tmp_path / "two")
    result = _run(tmp_path, folder)
    assert result.phase == "Succeeded", result.message  # a rejection is an answer, not a failure
    p = phases(result)
    assert p["report-rejection"] == "Succeeded"
    assert p["plan-reconstruction"] == "Skipped"  # when false
    assert p["onExit.finalize"] == "Skipped"  # the exit handler reports failures only
    for task in ("preprocess", "camera-poses", "point-cloud", "mesh", "convert", "finalize"):
        assert p[task] == "Omitted", task  # depends not satisfied: omission cascades
    report = (result.outputs["rejection"] / "index.html").read_text()
    assert "at least 3 are needed" in report
    assert "Rejected by the <b>quality-gate</b>" in report and "step <b>unknown</b>" not in report
    assert result.outputs["models"] is None


def test_a_rejected_photo_set_says_why_on_the_console_and_exits_3(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kai_flows.cli import app

    monkeypatch.setenv("KAI_CACHE_DIR", str(tmp_path / "cache"))
    folder = _two_photos(tmp_path / "two")
    result = CliRunner().invoke(app, ["run", str(REPO / "workflow_templates" / "reconstruction.yaml"), "-q",
                                      "--input", f"images={folder}", "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "rejected:" in result.output and "at least 3 are needed" in result.output


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "sample"
    render_sample_scene(folder, views=12, width=640, height=480)  # the quality gate wants a short side >= 480 px
    return folder


def test_a_failing_step_leaves_a_failure_report_from_the_exit_handler(tmp_path, small_sample):
    result = _run(tmp_path, small_sample / "images", min_registered_fraction="1.5")
    assert result.phase == "Failed"
    p = phases(result)
    assert p["camera-poses"] == "Failed" and p["point-cloud"] == "Omitted"
    assert p["preprocess"] == "Succeeded" and p["onExit.finalize"] == "Succeeded"
    report = result.outputs["failure-report"]
    assert report is not None, "the exit handler's report was not handed over"
    html = (report / "index.html").read_text()
    assert "camera-poses" in html and "min_registered_fraction" in html
    assert result.outputs["quality"] is not None  # what finished is kept


@pytest.mark.slow
def test_sample_scene_becomes_an_accurate_model(tmp_path):
    sample = tmp_path / "sample"
    render_sample_scene(sample)
    result = _run(tmp_path, sample / "images", quality_tier="draft")
    assert result.phase == "Succeeded", result.message
    models = result.outputs["models"]
    assert {p.suffix for p in models.iterdir()} >= {".glb", ".obj", ".ply", ".stl", ".usdz"}
    assert len(list(result.outputs["report"].glob("preview_*.png"))) == 3
    accuracy = evaluate(result.outputs["cameras"], sample / "gt_cameras", result.outputs["mesh"],
                        sample / "gt_mesh.ply", samples=50_000)
    assert accuracy.registered == accuracy.total == 30
    assert accuracy.position_error_mean < 0.001 * accuracy.diagonal
    # The bar (>= 0.8 at 1%) is measured at the standard tier by bench/reconstruction.py; the
    # draft tier used here to keep the suite short reaches about 0.76.
    assert accuracy.fscore_1pct >= 0.7
    over = [n.display_name for n in result.nodes.values() if n.over_memory_limit]
    assert not over, f"steps over their declared memory limit: {over}"


@pytest.mark.slow
def test_radiance_field_pipeline_runs_its_gpu_step_on_the_cpu(tmp_path, small_sample):
    result = run_pipeline(REPO / "workflow_templates" / "radiance-field.yaml",
                          parameters={"iterations": "200", "grid_size": "40", "quality_tier": "draft"},
                          inputs={"images": small_sample / "images"}, out=tmp_path / "out", progress=False,
                          cache=tmp_path / "cache")
    assert result.phase == "Succeeded", result.message
    p = phases(result)
    assert p["radiance-field"] == "Succeeded" and p["field-mesh"] == "Succeeded"
    assert (result.outputs["models"] / "model.glb").stat().st_size > 0
    accuracy = evaluate(result.outputs["cameras"], small_sample / "gt_cameras")
    assert accuracy.registered == 12
