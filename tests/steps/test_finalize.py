"""finalize: manifest with checksums, previews that show the whole model, an HTML report named after the pipeline
with the model in an offline viewer, download links and step times; a failure report as exit handler when there is
no model."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import trimesh
from PIL import Image

from kai_steps.convert import convert
from kai_steps.finalize import finalize

VIEWER = Path(__file__).resolve().parents[2] / "steps" / "viewer"
BACKGROUND = 245  # the previews' light grey

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
    assert manifest["metrics"]["fscore_1pct"] == 0.91
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
    # Seconds per step (another producer than Argo's pairs) are shown as given.
    times = json.loads((report / "timings.json").read_text())["steps"]
    assert [(t["step"], t["seconds"]) for t in times] == [("mesh", 3.25), ("convert", 1.5)]


def test_the_title_and_wording_follow_the_pipeline_that_made_the_model(tmp_path: Path) -> None:
    models = _models(tmp_path)
    pages = {}
    for pipeline in ("radiance-field", "reconstruction"):
        finalize(models, tmp_path / pipeline, pipeline=pipeline)
        pages[pipeline] = (tmp_path / pipeline / "index.html").read_text()
    assert "<title>Radiance-field report</title>" in pages["radiance-field"]
    assert "<h1>Radiance-field report: Succeeded</h1>" in pages["radiance-field"]
    assert "marching cubes" in pages["radiance-field"] and "Reconstruction report" not in pages["radiance-field"]
    assert "<h1>Reconstruction report: Succeeded</h1>" in pages["reconstruction"]
    assert "dense stereo" in pages["reconstruction"] and "radiance field" not in pages["reconstruction"].lower()
    assert json.loads((tmp_path / "radiance-field" / "manifest.json").read_text())["pipeline"] == "radiance-field"
    # Without the pipeline's name, the steps whose metrics were passed tell which surface made the model.
    finalize(models, tmp_path / "inferred", metrics=json.dumps({"radiance_field": {"psnr": 27.1}, "mesh": {}}))
    assert "<h1>Radiance-field report: Succeeded</h1>" in (tmp_path / "inferred" / "index.html").read_text()
    # A rejection and a failure say which pipeline too.
    finalize(None, tmp_path / "rejected", workflow_status="Rejected", failures='["too few photos"]',
             pipeline="radiance-field")
    assert "<h1>Radiance-field report: Rejected</h1>" in (tmp_path / "rejected" / "index.html").read_text()


def _node_fill(script: Path) -> str:
    """What timings.js writes into the page's step-times element, run by node with a one-element document."""
    stub = ("const el = {innerHTML: ''}; globalThis.document = {getElementById: (id) => id === 'step-times' ? el : "
            "null}; require(process.argv[1]); process.stdout.write(el.innerHTML);")
    done = subprocess.run(["node", "-e", stub, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


ARGO_TIMES = {  # as Argo fills {{tasks.<t>.startedAt}} / {{tasks.<t>.finishedAt}}: RFC 3339, to the second
    "preprocess": ["2026-11-28T04:00:00Z", "2026-11-28T04:00:07Z"],
    "camera-poses": ["2026-11-28T04:00:08Z", "2026-11-28T04:01:00Z"],
    "mesh": ["2026-11-28T04:01:01Z", "2026-11-28T04:01:31Z"],
}


def test_step_times_from_argo_fill_the_timeline_and_leave_the_page_byte_identical(tmp_path: Path) -> None:
    models = _models(tmp_path)
    finalize(models, tmp_path / "one", timings=json.dumps(ARGO_TIMES), pipeline="reconstruction")
    later = {k: [v[0].replace("04:", "05:"), v[1].replace("04:", "05:")] for k, v in ARGO_TIMES.items()}
    later["mesh"][1] = "2026-11-28T05:01:41Z"  # mesh took 10 s longer the second time
    finalize(models, tmp_path / "two", timings=json.dumps(later), pipeline="reconstruction")
    one = tmp_path / "one"
    times = json.loads((one / "timings.json").read_text())["steps"]
    assert [(t["step"], t["seconds"], t["offset"]) for t in times] == [
        ("preprocess", 7.0, 0.0), ("camera-poses", 52.0, 8.0), ("mesh", 30.0, 61.0)]
    page = (one / "index.html").read_text()
    assert '<div id="step-times">' in page and '<script src="timings.js"></script>' in page
    # The times differ between the runs; nothing else in the report does.
    for name in ("index.html", "manifest.json", "preview_front.png", "files/model.glb"):
        assert (one / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert (one / "timings.json").read_bytes() != (tmp_path / "two" / "timings.json").read_bytes()
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the timeline script is not run")
    table = _node_fill(one / "timings.js")
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", table)
    assert rows == [("preprocess", "7"), ("camera-poses", "52"), ("mesh", "30")]
    assert table.count('class="bar"') == 3 and "91 s from the first step" in table


def test_bad_step_times_are_noted_not_fatal(tmp_path: Path) -> None:
    finalize(None, tmp_path / "report", workflow_status="Failed",
             timings=json.dumps({"mesh": ["", "2026-11-28T04:00:07Z"], "convert": "soon"}))
    page = (tmp_path / "report" / "index.html").read_text()
    assert "step mesh: start &#x27;&#x27; or finish" in page and "step convert: &#x27;soon&#x27; is neither" in page
    assert not (tmp_path / "report" / "timings.json").exists() and "step-times" not in page


def test_every_delivered_file_is_linked_beside_the_report_with_size_and_sha256(tmp_path: Path) -> None:
    models = _models(tmp_path)
    (models / "extra").mkdir()
    (models / "extra" / "read me.txt").write_text("a file in a sub-folder, a space in its name\n")
    finalize(models, tmp_path / "report")
    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    manifest = json.loads((report / "manifest.json").read_text())
    links = re.findall(r'<tr><td><a href="([^"]+)" download>([^<]+)</a></td><td>([\d,]+)</td><td><code>([0-9a-f]{64})',
                       page)
    assert len(links) == len(manifest["files"]) == 5
    assert ("files/extra/read%20me.txt", "extra/read me.txt") in [link[:2] for link in links]
    for href, label, size, sha in links:
        target = report / unquote(href)
        assert unquote(href) == f"files/{label}" and target.is_file(), href  # relative, inside the report's folder
        data = target.read_bytes()
        assert data == (models / label).read_bytes()
        assert int(size.replace(",", "")) == len(data) and sha == hashlib.sha256(data).hexdigest()


def test_previews_show_the_whole_model_a_thin_wide_base_included(tmp_path: Path) -> None:
    """A sphere on a plate: the plate has 8 of 10,250 vertices, which a percentile-based framing drops, cutting
    the base off at the picture's edges; every preview must keep the model off its border."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    sphere.apply_translation([0, 0.6, 0])
    plate = trimesh.creation.box(extents=[2.0, 0.1, 2.0])
    m = trimesh.util.concatenate([sphere, plate])
    (tmp_path / "models").mkdir()
    m.export(tmp_path / "models" / "model.ply")
    s = finalize(tmp_path / "models", tmp_path / "report")
    assert len(s.previews) == 3
    for name in s.previews:
        img = np.asarray(Image.open(tmp_path / "report" / name).convert("RGB")).astype(float)
        model = np.any(np.abs(img - BACKGROUND) > 3, axis=2)
        border = np.concatenate([model[0], model[-1], model[:, 0], model[:, -1]])
        assert not border.any(), f"{name}: the model touches the picture's border ({border.sum()} pixels)"
        rows, cols = np.nonzero(model)
        # ... and fills the picture: framed on the model, not on a box far larger than it.
        assert max(np.ptp(rows) / model.shape[0], np.ptp(cols) / model.shape[1]) > 0.85, name


def _viewer_tags(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<model-viewer src="([^"]+)"( poster="[^"]+")?', page)


def _no_remote_urls(page: str) -> None:
    """Nothing the page loads comes from the network: no script, style, link or image URL with a scheme."""
    refs = re.findall(r'(?:src|href)=["\']([^"\']+)', page) + re.findall(r"url\(([^)]+)\)", page)
    assert refs and not [r for r in refs if re.match(r"(?i)(https?:)?//", r)], refs
    assert not re.search(r"(?i)https?://", page)


def test_the_report_embeds_the_delivered_glb_in_an_offline_viewer(tmp_path: Path) -> None:
    models = _models(tmp_path)
    finalize(models, tmp_path / "report", pipeline="reconstruction")
    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    [(src, poster)] = _viewer_tags(page)
    assert src == "files/model.glb" and (report / src).read_bytes() == (models / "model.glb").read_bytes()
    assert poster == ' poster="preview_front.png"' and (report / "preview_front.png").is_file()
    assert '<script src="viewer/model-viewer-umd.min.js"></script>' in page
    for name in ("model-viewer-umd.min.js", "LICENSE", "NOTICE", "README.md"):
        assert (report / "viewer" / name).read_bytes() == (VIEWER / name).read_bytes(), name
    assert not (report / "viewer" / "draco").exists()  # this glb is not Draco-compressed: the core viewer suffices
    # For a page opened from disk, which may run a script beside it but not fetch a file: the same glb in a script.
    script = (report / "viewer" / "model-data.js").read_text()
    assert script.startswith('window.kaiModelGlb = "') and script.endswith('";\n')
    assert base64.b64decode(script.split('"')[1]) == (models / "model.glb").read_bytes()
    assert "dracoDecoderLocation" not in page
    _no_remote_urls(page)
    assert json.loads((report / "manifest.json").read_text())["viewer"] == "files/model.glb"


def test_a_draco_glb_gets_the_vendored_decoder_not_googles_cdn(tmp_path: Path) -> None:
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    (tmp_path / "mesh").mkdir()
    m.export(tmp_path / "mesh" / "mesh.ply")
    convert(tmp_path / "mesh", tmp_path / "models", formats=["glb", "ply"], draco=True)
    glb = (tmp_path / "models" / "model.glb").read_bytes()
    assert b"KHR_draco_mesh_compression" in glb
    finalize(tmp_path / "models", tmp_path / "report")
    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    assert _viewer_tags(page)[0][0] == "files/model.glb"
    assert "customElements.get('model-viewer').dracoDecoderLocation = 'viewer/draco/';" in page
    assert not (report / "viewer" / "model-data.js").exists()  # its decoder cannot load from disk either
    for name in ("draco_wasm_wrapper.js", "draco_decoder.wasm"):  # the files three.js's DRACOLoader asks for
        assert (report / "viewer" / "draco" / name).read_bytes() == (VIEWER / "draco" / name).read_bytes()
    _no_remote_urls(page)


def test_the_vendored_viewer_is_the_version_its_readme_names(tmp_path: Path) -> None:
    readme = (VIEWER / "README.md").read_text()
    listed = dict((path, sha) for sha, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.M))
    assert set(listed) == {"model-viewer-umd.min.js", "draco/draco_wasm_wrapper.js", "draco/draco_decoder.wasm"}
    for path, sha in listed.items():
        assert hashlib.sha256((VIEWER / path).read_bytes()).hexdigest() == sha, path
    script = (VIEWER / "model-viewer-umd.min.js").read_bytes()
    assert len(script) < 1_500_000 and b"customElements.define(\"model-viewer\"" in script
    assert "Apache License" in (VIEWER / "LICENSE").read_text() and "@google/model-viewer@4.4.0" in readme
    assert {"three.js", "lit", "fflate"} <= set(re.findall(r"=+ (\S+)", (VIEWER / "NOTICE").read_text()))


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


# --- the cameras around the model, the quality gate's photos, metrics as tables -----------------------------------

# The COLMAP frame is the viewer frame turned a quarter about X (y down, as SfM often leaves it): x_viewer = R x_model.
VIEWER_FROM_MODEL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
RING = 8  # cameras on a ring around the model


def _ring_sparse(out: Path, radius: float = 2.0, height: float = 0.4) -> Path:
    """A posed COLMAP model: ``RING`` cameras on a horizontal ring (in the viewer frame) around the origin, each
    looking at it, written in the COLMAP frame (x_model = R^T x_viewer)."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=640, height=480,
                                                    params=[500.0, 500.0, 320.0, 240.0], camera_id=1))
    for i in range(RING):
        a = 2 * np.pi * i / RING
        centre_v = np.array([radius * np.sin(a), height, radius * np.cos(a)])
        fwd = -centre_v / np.linalg.norm(centre_v)
        right = np.cross(fwd, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        cam_from_viewer = np.stack([right, down, fwd])  # rows: the camera's x (right), y (down), z (forward)
        R = cam_from_viewer @ VIEWER_FROM_MODEL  # x_cam = R x_model + t
        centre = VIEWER_FROM_MODEL.T @ centre_v
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{i:04d}.jpg", camera_id=1, image_id=i + 1),
                                         pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ centre))
    (out / "0").mkdir(parents=True)
    rec.write(str(out / "0"))
    return out


def _photos(folder: Path) -> Path:
    """Five photos: three overlapping crops of one texture, a blurred one and a dark one (640x480 JPEGs)."""
    import cv2

    rng = np.random.default_rng(7)
    texture = cv2.GaussianBlur((rng.random((640, 900)) * 255).astype(np.uint8), (0, 0), 1.5)
    texture = cv2.cvtColor(texture, cv2.COLOR_GRAY2RGB)
    folder.mkdir(parents=True)
    crops = [texture[i * 40:i * 40 + 480, i * 60:i * 60 + 640] for i in range(4)]
    for i, crop in enumerate(crops[:3]):
        Image.fromarray(crop).save(folder / f"good_{i}.jpg", quality=92)
    Image.fromarray(cv2.GaussianBlur(crops[3], (0, 0), 9)).save(folder / "blurred.jpg", quality=92)
    Image.fromarray((crops[1] * 0.08).astype(np.uint8)).save(folder / "dark.jpg", quality=92)
    return folder


def _quality(images: Path, out: Path, min_images: int = 3) -> Path:
    """The quality gate run for real on ``images``: its report folder (quality.json, contact sheet)."""
    from kai_steps.quality import aggregate_quality, assess_image

    scores = [assess_image(p, image_name=p.name) for p in sorted(images.iterdir())]
    aggregate_quality(images, scores, out, min_images=min_images)
    return out


def report_inputs(tmp_path: Path) -> dict[str, Path]:
    """Everything a full report shows: the models (a two-coloured sphere through convert), the mesh folder whose
    summary.json records viewer_from_model, a ring of posed cameras, the photos and the quality gate's report."""
    models = _models(tmp_path)
    (tmp_path / "mesh" / "summary.json").write_text(json.dumps({"viewer_from_model": VIEWER_FROM_MODEL.tolist()}))
    images = _photos(tmp_path / "photos")
    return {"models": models, "mesh": tmp_path / "mesh", "sparse": _ring_sparse(tmp_path / "sparse"),
            "images": images, "quality": _quality(images, tmp_path / "quality")}


def _orange(path: Path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return (img[..., 0] > 180) & (img[..., 1] > 70) & (img[..., 1] < 170) & (img[..., 2] < 60)


def test_the_cameras_are_drawn_around_the_model_in_the_viewer_frame(tmp_path: Path) -> None:
    inputs = report_inputs(tmp_path)
    s = finalize(inputs["models"], tmp_path / "report", sparse=inputs["sparse"], mesh=inputs["mesh"])
    report = tmp_path / "report"
    assert s.cameras == RING
    above, side = _orange(report / "cameras_above.png"), _orange(report / "cameras_side.png")
    # From above, the ring is a ring: frusta on all four sides of the sphere, as wide as deep, centred.
    rows, cols = np.nonzero(above)
    h, w = above.shape
    assert abs(np.ptp(rows) - np.ptp(cols)) < 0.15 * np.ptp(cols), (np.ptp(rows), np.ptp(cols))
    assert abs(rows.mean() - h / 2) < 0.05 * h and abs(cols.mean() - w / 2) < 0.05 * w
    # From the side, the same ring is flat: far wider than tall (turned the wrong way, it would stand upright).
    rows, cols = np.nonzero(side)
    assert np.ptp(cols) > 3 * np.ptp(rows), (np.ptp(rows), np.ptp(cols))
    page = (report / "index.html").read_text()
    assert '<img alt="from above, the model&#x27;s front at the bottom" src="cameras_above.png">' in page
    assert "Where the 8 photos were taken from" in page
    # Without the rotation the cameras would be askew: they are left out, and the report says why.
    s = finalize(inputs["models"], tmp_path / "unplaced", sparse=inputs["sparse"])
    assert s.cameras == 0 and not (tmp_path / "unplaced" / "cameras_above.png").exists()
    assert "the cameras are not drawn: no summary.json passed records viewer_from_model" in (
        tmp_path / "unplaced" / "index.html").read_text()


def test_the_gates_scores_per_photo_with_thumbnails_of_the_flagged_ones(tmp_path: Path) -> None:
    images = _photos(tmp_path / "photos")
    quality = _quality(images, tmp_path / "quality", min_images=5)  # three usable of five: rejected
    s = finalize(None, tmp_path / "report", workflow_status="Rejected",
                 failures=json.dumps(json.loads((quality / "quality.json").read_text())["reasons"]),
                 quality=quality, images=images)
    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    assert s.photos == 5 and "The quality gate's verdict: <b>reject</b>; 5 photo(s), 2 flagged." in page
    rows = re.findall(r"<tr( class=flagged)?><td>(.*?)</td><td>(.*?)</td>", page)
    by_name = {re.sub(r".*<figcaption>|</figcaption>.*", "", cell): (bool(flag), cell, why)
               for flag, cell, why in rows}
    assert by_name["blurred.jpg"][0] and by_name["blurred.jpg"][2] == "blurry"
    assert by_name["dark.jpg"][0] and "underexposed" in by_name["dark.jpg"][2]
    assert [by_name[f"good_{i}.jpg"] for i in range(3)] == [(False, f"good_{i}.jpg", "ok") for i in range(3)]
    thumbs = sorted((report / "photos").iterdir())
    assert len(thumbs) == 2  # the flagged photos only
    for name in ("blurred.jpg", "dark.jpg"):
        [src] = re.findall(r'<img src="([^"]+)" alt="' + re.escape(name), by_name[name][1])
        with Image.open(report / src) as im:
            assert im.format == "JPEG" and max(im.size) == 160 and im.size[0] / im.size[1] == pytest.approx(4 / 3, 0.02)
    # The same photos and scores give the same bytes.
    finalize(None, tmp_path / "again", workflow_status="Rejected", quality=quality, images=images,
             failures=json.dumps(json.loads((quality / "quality.json").read_text())["reasons"]))
    for f in [report / "index.html", *thumbs]:
        assert f.read_bytes() == (tmp_path / "again" / f.relative_to(report)).read_bytes(), f.name


def test_metrics_are_tables_not_json_at_any_depth(tmp_path: Path) -> None:
    metrics = {"quality": {"verdict": "proceed", "reasons": ["all 5 images usable"], "usable": 5},
               "convert": {"formats": ["glb", "ply"], "files": {"model.glb": 1234, "model.ply": 1522224},
                           "placement": {"offset": [0.0, 0.5, 0.0], "units": "unknown"}},
               "point_cloud": {"pairs": [["a.jpg", "b.jpg"], ["b.jpg", "c.jpg"]], "voxel_size": 0.0123456789,
                               "views": [{"name": "a.jpg", "valid": 0.9}, {"name": "b.jpg", "valid": None}]},
               "watertight": True}
    finalize(None, tmp_path / "report", workflow_status="Failed", metrics=json.dumps(metrics))
    page = (tmp_path / "report" / "index.html").read_text()
    section = page[page.index("<h2>Metrics</h2>"):page.index("<h2>Software</h2>")]
    assert not re.search(r'[\[{]\s*"|&quot;|":', section), section  # no JSON list or object, escaped or not
    assert "<tr><th>watertight</th><td>yes</td></tr>" in section and "<h3>point cloud</h3>" in section
    assert "<tr><th>model.glb</th><td>1234</td></tr><tr><th>model.ply</th><td>1,522,224</td></tr>" in section
    assert "<tr><th>formats</th><td>glb, ply</td></tr>" in section and "(a.jpg, b.jpg)<br>(b.jpg, c.jpg)" in section
    assert "<tr><th>name</th><th>valid</th></tr><tr><td>a.jpg</td><td>0.9</td></tr>" in section
    assert "0.0123457" in section and "<h2>Software</h2><table class='kv'><tr><th>python</th>" in page


def test_the_radiance_fields_held_out_views_are_shown_beside_the_photos_with_their_scores(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "held_out").mkdir()
    for name, colour in (("000", (200, 40, 40)), ("008", (40, 200, 40))):
        Image.new("RGB", (640, 480), colour).save(tmp_path / "photos" / f"{name}.jpg")
        Image.new("RGB", (160, 120), colour).save(tmp_path / "held_out" / f"{name}.png")
    (tmp_path / "held_out" / "scores.json").write_text(json.dumps({"psnr": 24.5, "baseline_psnr": 15.25, "views": [
        {"name": "000.jpg", "psnr": 25.1, "ssim": 0.812}, {"name": "008.jpg", "psnr": 23.9, "ssim": 0.774}]}))
    finalize(_models(tmp_path), tmp_path / "report", pipeline="radiance-field", held_out=tmp_path / "held_out",
             images=tmp_path / "photos")
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Held-out views</h2>" in page and "against 15.25 dB for a constant colour" in page
    assert "000.jpg: PSNR 25.10 dB, SSIM 0.812" in page and "008.jpg: PSNR 23.90 dB, SSIM 0.774" in page
    for src in re.findall(r"<img src='(held_out/[^']+)'", page):
        with Image.open(tmp_path / "report" / src) as im:  # the photo resized to the render's size, beside it
            assert im.size == (160, 120)
    assert len(re.findall(r"<img src='held_out/", page)) == 4
