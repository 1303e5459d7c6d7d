"""The finalizer's report in a real browser (headless Chromium): opened from disk as a person opens a downloaded
report (and as `make run` names it), the page loads with no console error, the viewer loads the delivered model and
shows it (a screenshot of the viewer holds the model's red and blue, not a blank or the poster alone), and the
timeline is drawn; served over HTTP, it loads the model from files/ with no console error.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kai_steps.finalize import finalize
from tests.browser import browser, chromium, serve
from tests.steps.test_finalize import ARGO_TIMES, report_inputs

# Resolves once the viewer has loaded its model and drawn it (two animation frames after it became visible, so the
# poster has faded); also reports how many timeline bars timings.js drew.
SHOWN = """new Promise(done => {
  const v = document.querySelector('model-viewer');
  v.scrollIntoView();  // the viewer draws only when in view
  const check = () => v.loaded && v.modelIsVisible
    ? requestAnimationFrame(() => requestAnimationFrame(() => done({
        bars: document.querySelectorAll('#step-times .bar').length, src: v.src})))
    : setTimeout(check, 50);
  check();
})"""
# Served: resolves as soon as the viewer has fetched files/model.glb (an observer, not polling: the page is busy for
# seconds once it starts drawing); its parse and drawing are the same as from disk.
FETCHED = """new Promise(done => new PerformanceObserver((list, observer) => {
  if (list.getEntries().some(e => e.name.endsWith('/files/model.glb') && e.responseEnd > 0)) {
    observer.disconnect();
    done({bars: document.querySelectorAll('#step-times .bar').length,
          src: document.querySelector('model-viewer').src});
  }
}).observe({type: 'resource', buffered: true}))"""
BACKGROUND = np.array([245, 245, 245])  # model-viewer's background in the report's style (#f5f5f5)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser()  # skip (or fail) before building the report when there is no browser
    tmp = tmp_path_factory.mktemp("report-browser")
    inputs = report_inputs(tmp)
    finalize(inputs["models"], tmp / "report", timings=json.dumps(ARGO_TIMES), pipeline="reconstruction",
             metrics=json.dumps({"convert": {"formats": ["glb", "ply"]}}), sparse=inputs["sparse"],
             mesh=inputs["mesh"], quality=inputs["quality"], images=inputs["images"])
    return tmp / "report"


def _shows_the_model(png: bytes, where: str) -> None:
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert img.shape[0] > 300 and img.shape[1] > 600, f"{where}: the viewer is {img.shape[1]}x{img.shape[0]}"
    covered = np.any(np.abs(img - BACKGROUND) > 12, axis=2).mean()
    red = ((img[..., 0] > img[..., 2] + 60) & (img[..., 0] > 120)).mean()
    blue = ((img[..., 2] > img[..., 0] + 60) & (img[..., 2] > 120)).mean()
    assert img.std() > 20 and covered > 0.05, f"{where}: the viewer looks blank (std {img.std():.1f}, " \
                                              f"{100 * covered:.1f}% not background)"
    assert red > 0.01 and blue > 0.01, f"{where}: the sphere's colours are missing ({red:.3f} red, {blue:.3f} blue)"


def test_the_report_shows_the_model_with_no_console_error_from_disk_and_served(report: Path) -> None:
    with chromium() as chrome:
        # Opened from disk, as `make run` names it: the viewer shows the copy in viewer/model-data.js, as a blob.
        page = chrome.load(report.resolve().as_uri() + "/index.html", until=SHOWN, clip="model-viewer", timeout=60)
        assert page.errors == [], page.errors
        _shows_the_model(page.screenshot, "from disk")
        assert page.value["bars"] == len(ARGO_TIMES) and page.value["src"].startswith("blob:")
        # Served (a bucket, a web server): the viewer reads files/model.glb, the same bytes, drawn the same way, so
        # only the fetch is waited for here (a frame drawn in software costs seconds).
        with serve(report) as url:
            page = chrome.load(url + "index.html", until=FETCHED, screenshot=False, timeout=60)
        assert page.errors == [], page.errors
        assert page.value == {"bars": len(ARGO_TIMES), "src": "files/model.glb"}
