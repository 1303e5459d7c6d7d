"""The pipelines with every step in its image (`--runtime container`), against the process runtime on the same input.

Needs the step images (`make images`); `make test-images` runs these.
"""

import json
from pathlib import Path

import pytest
import yaml

from kai_flows.compile import image_ref
from kai_flows.engine.runner import run_pipeline
from kai_flows.evaluate import evaluate
from kai_flows.images import families, find_checkout
from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG
from kai_steps.sample_scene import render_sample_scene
from tests.conftest import DATASETS, REPO

SCEAUX = DATASETS / "sceaux_castle" / "images"


def _all_images_present() -> bool:
    from kai_flows.containers import ContainerEngineError, find_engine

    try:  # no engine (or a docker CLI whose daemon does not answer): nothing to run the images with
        engine = find_engine()
    except ContainerEngineError:
        return False
    return all(engine.image_exists(image_ref(f, DEFAULT_REGISTRY, DEFAULT_TAG)) for f in families(find_checkout(REPO)))


pytestmark = [pytest.mark.images, pytest.mark.slow,
              pytest.mark.skipif(not _all_images_present(), reason="needs the step images: run `make images`")]


def _run(tmp_path: Path, pipeline: str, images: Path, runtime: str, **params: str):
    return run_pipeline(REPO / "workflow_templates" / f"{pipeline}.yaml", parameters=params,
                        inputs={"images": images}, out=tmp_path / runtime, progress=False, cache=tmp_path / "cache",
                        runtime=runtime)


@pytest.mark.skipif(not SCEAUX.is_dir(), reason="needs ../shared/datasets/sceaux_castle")
def test_image_quality_in_containers_scores_every_photo_as_the_process_runtime_does(tmp_path):
    result = _run(tmp_path, "image-quality", SCEAUX, "container")
    assert result.phase == "Succeeded", result.message
    pods = [n for n in result.nodes.values() if n.type == "Pod"]
    photos = [p for p in SCEAUX.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert len(pods) == len(photos) + 2  # list, one score per photo, aggregate
    record = json.loads((tmp_path / "container" / "run.json").read_text())
    assert record["kai"]["runtime"] == "container"
    in_container = json.loads((result.outputs["report"] / "quality.json").read_text())
    assert in_container["total"] == len(photos) and in_container["verdict"] in ("proceed", "enhance")
    process = _run(tmp_path, "image-quality", SCEAUX, "process")
    assert json.loads((process.outputs["report"] / "quality.json").read_text()) == in_container


def test_reconstruction_in_containers_matches_the_process_runtime(tmp_path, monkeypatch):
    sample = tmp_path / "sample"
    render_sample_scene(sample)
    # The container runtime applies the templates' env (OMP_NUM_THREADS=1 ...), the process runtime does not: give
    # the process run the same env, so that both compute with the same thread counts.
    doc = yaml.safe_load((REPO / "workflow_templates" / "reconstruction.yaml").read_text())
    for t in doc["spec"]["templates"]:
        for e in (t.get("container") or {}).get("env") or []:
            if e["name"] != "HOME":
                monkeypatch.setenv(e["name"], e["value"])
    scores = {}
    for runtime in ("process", "container"):
        result = _run(tmp_path, "reconstruction", sample / "images", runtime, quality_tier="draft")
        assert result.phase == "Succeeded", f"{runtime}: {result.message}"
        scores[runtime] = evaluate(result.outputs["cameras"], sample / "gt_cameras", result.outputs["mesh"],
                                   sample / "gt_mesh.ply", samples=50_000)
        oom = [n.display_name for n in result.nodes.values() if n.message.startswith("OOMKilled")]
        assert not oom, f"{runtime}: OOM-killed steps {oom}"
    process, container = scores["process"], scores["container"]
    assert container.registered == process.registered == container.total
    assert abs(container.fscore_1pct - process.fscore_1pct) <= 0.01, (container.fscore_1pct, process.fscore_1pct)
