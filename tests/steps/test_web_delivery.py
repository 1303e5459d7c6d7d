"""web_delivery on a small coloured mesh (two levels): the bundle's files, manifest checksums, a page that links
only files in the bundle and nothing on the network, the level picker, and the page loaded in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from kai_flows.pipelines import PIPELINES
from kai_steps._colmap import ReconstructionInputError
from kai_steps.mobile import mobile_lods, mobile_package
from kai_steps.web_delivery import web_delivery
from tests.browser import browser, chromium, serve


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("web")
    m = trimesh.creation.uv_sphere(radius=0.5, count=[60, 150])  # 35k faces: preview decimated, reduced whole
    top = m.vertices[:, 1] > 0
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=np.where(
        top[:, None], [220, 30, 30, 255], [30, 30, 220, 255]).astype(np.uint8))
    m.export(root / "model.ply")
    mobile_lods(root / "model.ply", root / "lods")
    mobile_package(root / "lods", root / "package")
    summary = web_delivery(root / "package", root / "bundle", title="Test <sphere>", poster_px=256)
    return {"root": root, "out": root / "bundle", "summary": summary}


def test_the_bundle_holds_levels_viewer_poster_and_a_manifest_whose_checksums_match(bundle: dict) -> None:
    out, s = bundle["out"], bundle["summary"]
    assert s.levels == ["preview", "reduced"] and s.poster == "poster.png"
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [f["path"] for f in manifest["files"]] == [p for p in on_disk if p != "manifest.json"]
    assert len(manifest["files"]) == s.files and s.bytes == sum(p.stat().st_size for p in out.rglob("*")
                                                                 if p.is_file())
    for f in manifest["files"]:
        data = (out / f["path"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest(), f["path"]
    assert {"levels/preview.glb", "levels/preview.usdz", "levels/reduced.glb", "levels/reduced.usdz",
            "viewer/model-viewer-umd.min.js", "viewer/LICENSE", "viewer/NOTICE", "viewer/draco/draco_decoder.wasm",
            "viewer/draco/draco_wasm_wrapper.js", "index.html", "poster.png"} <= set(on_disk)
    levels = manifest["levels"]
    assert [lv["name"] for lv in levels] == ["preview", "reduced"]
    assert levels[0]["triangles"] < 25_000 and all(lv["ar_quick_look_ok"] and lv["scene_viewer_ok"] for lv in levels)
    poster = np.asarray(Image.open(out / "poster.png"))
    assert poster.shape == (256, 256, 3)
    red = (poster[..., 0] > 150) & (poster[..., 2] < 80)
    blue = (poster[..., 2] > 150) & (poster[..., 0] < 80)
    assert red.sum() > 1000 and blue.sum() > 1000  # the model, coloured, fills the poster


def test_the_page_links_only_files_in_the_bundle_and_nothing_on_the_network(bundle: dict) -> None:
    out = bundle["out"]
    page = (out / "index.html").read_text()
    for text in (page, (out / "manifest.json").read_text()):
        assert not re.search(r"https?://", text)
    assert "<title>Test &lt;sphere&gt;</title>" in page  # the title is escaped
    refs = re.findall(r'(?:src|href|poster)="([^"?#]+)"', page)
    refs += re.findall(r'"(?:glb|usdz)": "([^"]+)"', page)  # the level table the picker reads
    refs += re.findall(r"dracoDecoderLocation = '([^']+)'", page)
    assert {"viewer/model-viewer-umd.min.js", "poster.png", "manifest.json", "levels/preview.glb",
            "levels/reduced.usdz", "viewer/draco/"} <= set(refs)
    for ref in refs:
        if ref != "data:,":  # the empty favicon: no request, so no 404 in the console
            assert not ref.startswith("/") and (out / ref).exists(), ref


def test_the_page_loads_over_http_without_errors_and_picks_a_level(bundle: dict) -> None:
    browser()
    level = "document.documentElement.dataset.level"
    with serve(bundle["out"]) as url, chromium() as b:
        # the asked level, loaded through the vendored viewer and its local Draco decoder (25 s measured with
        # software WebGL on two busy cores)
        viewer = "document.querySelector('model-viewer')"
        loaded = f"{viewer}.loaded && [{level}, {viewer}.getAttribute('src'), {viewer}.getAttribute('ios-src')]"
        page = b.load(url + "index.html?level=preview", until=loaded, timeout=120)
        assert page.errors == [] and page.value == ["preview", "levels/preview.glb", "levels/preview.usdz"]
        # an unknown name: the device decides (this desktop-sized window: the finest level) and the page says so
        page = b.load(url + "index.html?level=huge", until=f"{level} && document.getElementById('level').textContent")
        assert page.errors == [] and 'there is no level "huge" here' in page.value
        assert "reduced level" in page.value


def test_a_textured_model_is_bundled_with_its_texture_and_a_textured_poster(tmp_path: Path) -> None:
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    v = m.vertices / 0.5
    uv = np.column_stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, 0.5 + np.arcsin(v[:, 1]) / np.pi])
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    image[:32], image[32:] = [220, 30, 30], [30, 30, 220]  # red above the equator, blue below
    m.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(image))
    m.export(tmp_path / "model.glb")
    mobile_lods(tmp_path / "model.glb", tmp_path / "lods", max_texture_px=64)
    mobile_package(tmp_path / "lods", tmp_path / "package")
    web_delivery(tmp_path / "package", tmp_path / "bundle", poster_px=96)
    level = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["levels"][0]
    assert level["name"] == "preview" and level["texture_px"] == 64
    poster = np.asarray(Image.open(tmp_path / "bundle" / "poster.png")).astype(int)
    # the poster reads the texture: red above the equator, blue below (seen from 20 degrees above, the equator
    # crosses the middle column at row 66 of 96)
    assert (poster[28:52, 40:56, 0] > 150).all() and (poster[28:52, 40:56, 2] < 60).all()
    assert (poster[76:84, 40:56, 2] > 120).all() and (poster[76:84, 40:56, 0] < 60).all()


def test_bad_inputs_are_named(bundle: dict, tmp_path: Path) -> None:
    with pytest.raises(ReconstructionInputError, match=r"levels folder .*missing does not exist"):
        web_delivery(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconstructionInputError, match=r"levels folder .*empty holds no summary.json"):
        web_delivery(tmp_path / "empty", tmp_path / "out")
    package = bundle["root"] / "package"
    summary = json.loads((package / "summary.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text(json.dumps({"levels": [{**summary["levels"][0], "name": "ultra"}]}))
    with pytest.raises(ReconstructionInputError, match=r"unknown level 'ultra'; known: preview, reduced"):
        web_delivery(bad, tmp_path / "out")
    (bad / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReconstructionInputError, match=r"level preview has no glb \('levels/preview.glb' is missing"):
        web_delivery(bad, tmp_path / "out")
    with pytest.raises(ReconstructionInputError, match=r"poster_px=10 is outside 64\.\.2048"):
        web_delivery(package, tmp_path / "out", poster_px=10)
    assert not (tmp_path / "out").exists()


def test_the_web_delivery_pipeline_takes_a_model_and_gives_a_bundle() -> None:
    p = PIPELINES["web-delivery"]()
    assert list(p.inputs) == ["models"] and list(p.outputs) == ["bundle"]
    assert {"levels", "glb_budget_kb", "title"} <= set(p.params)
    assert "mobile-optimization" in PIPELINES
