"""finalize: manifest with checksums, previews that show the model, an HTML report; a failure report as exit
handler when there is no model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from kai_steps.convert import convert
from kai_steps.finalize import finalize

ARGO_FAILURES = json.dumps([{
    "displayName": "camera-poses", "message": "only 2 of 11 images registered (0003.jpg, 0004.jpg)",
    "templateName": "camera-poses", "phase": "Failed", "podName": "recon-abc-camera-poses-123",
    "finishedAt": "2026-11-28T04:00:00Z",
}])


def _models(tmp_path: Path) -> Path:
    """An icosphere, red on top and blue below, converted to three formats."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    colors = np.where((m.vertices[:, 1] > 0)[:, None], [220, 30, 30, 255], [30, 30, 220, 255]).astype(np.uint8)
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=colors)
    (tmp_path / "mesh").mkdir()
    m.export(tmp_path / "mesh" / "mesh.ply")
    convert(tmp_path / "mesh", tmp_path / "models", formats=["glb", "ply", "usdz"])
    return tmp_path / "models"


def test_report_of_a_successful_run(tmp_path: Path) -> None:
    models = _models(tmp_path)
    s = finalize(models, tmp_path / "report", metrics=json.dumps({"fscore_1pct": 0.91, "num_faces": 5120}),
                 timings=json.dumps({"mesh": 3.25, "convert": 1.5}), workflow_name="recon-abc")
    report = tmp_path / "report"
    assert s.status == "Succeeded" and s.failed_step == "" and s.num_files == 4
    manifest = json.loads((report / "manifest.json").read_text())
    by_path = {f["path"]: f for f in manifest["files"]}
    assert set(by_path) == {"model.glb", "model.ply", "model.usdz", "summary.json"}
    for name, entry in by_path.items():
        data = (models / name).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["metrics"]["fscore_1pct"] == 0.91 and manifest["timings"]["mesh"] == 3.25
    assert {"pycolmap", "open3d", "trimesh", "numpy"} <= set(manifest["versions"])
    assert s.previews == ["preview_front.png", "preview_left.png", "preview_right.png"]
    for name in s.previews:
        img = np.asarray(Image.open(report / name).convert("RGB")).astype(float)
        covered = np.any(np.abs(img - 245) > 10, axis=2).mean()
        assert 0.05 < covered < 0.9 and img.std() > 20, name
        # The sphere is red on top and blue below, lit: both colours show.
        assert (img[..., 0] > img[..., 2] + 60).mean() > 0.02 and (img[..., 2] > img[..., 0] + 60).mean() > 0.02
    page = (report / "index.html").read_text()
    assert "Succeeded" in page and "fscore_1pct" in page and "model.glb" in page and "data:image/png;base64," in page
    assert "Failed at" not in page


def test_exit_handler_without_models_reports_where_and_why(tmp_path: Path) -> None:
    s = finalize(None, tmp_path / "report", workflow_status="Failed", failures=ARGO_FAILURES)
    assert s.status == "Failed" and s.failed_step == "camera-poses" and s.num_files == 0 and s.previews == []
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Failed at step <b>camera-poses</b> because only 2 of 11 images registered (0003.jpg, 0004.jpg)" in page
    manifest = json.loads((tmp_path / "report" / "manifest.json").read_text())
    assert manifest["status"] == "Failed" and manifest["failures"][0]["step"] == "camera-poses"


def test_missing_model_path_and_bad_json_still_give_a_report(tmp_path: Path) -> None:
    s = finalize(tmp_path / "absent", tmp_path / "report", workflow_status="Error", failures="not json {",
                 metrics="[1, 2")
    page = (tmp_path / "report" / "index.html").read_text()
    assert s.failed_step == "unknown" and "Failed at step <b>unknown</b> because not json {" in page
    assert "metrics is not valid JSON" in page


def test_unrenderable_model_is_noted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.ply").write_bytes(b"ply\nthis is not a mesh\n")
    s = finalize(tmp_path / "models", tmp_path / "report")
    assert s.previews == [] and s.num_files == 1
    assert "previews could not be rendered from model.ply" in (tmp_path / "report" / "index.html").read_text()
