"""The report's page, ``index.html``, from what the finalizer gathered; and ``timings.js``, which fills its timeline.

Sections, in the order a person asks: the verdict (and where and why a run failed or was rejected), the model in
the interactive viewer, the previews, the cameras around the model, the quality gate's photos, the step times, the
metrics, the files, the software versions. Nothing here reads a clock or the host: the same content gives the same
bytes.

The viewer's ``src`` is ``files/<model>.glb``, which it loads when served (http, a bucket). Opened from disk
(``file://``), where browsers refuse a page's fetch of a file beside it, a script right after the viewer drops that
``src`` before the viewer starts loading and loads ``viewer/model-data.js`` instead (the same glb, base64, in a
classic script, which a page on disk may run), then shows the model from a blob URL.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from kai_steps import _report_tables as tables
from kai_steps._report_held_out import HeldOut, held_out_html
from kai_steps._report_photos import PhotoScores, scores_html

FILES = "files"  # the delivered files, copied beside the page
VIEWER = "model-viewer-umd.min.js"  # a classic script: it loads the same from disk, a bucket or a CDN
MODEL_DATA = "viewer/model-data.js"  # the glb for a page opened from disk

STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
         "table table{margin:-3px -8px}.failed{background:#fde8e8;border:1px solid #c33;padding:0 1em}"
         ".ok{background:#e8f5e9;border:1px solid #2e7d32;padding:0 1em}.previews{display:flex;gap:8px;"
         "flex-wrap:wrap}figure{margin:0}.previews img{width:320px}.cameras img{width:480px}"
         ".held-out{display:flex;gap:12px;flex-wrap:wrap}.pair{display:flex;gap:4px;flex-wrap:wrap}"
         ".pair h3{width:100%;font-size:1em;margin:.3em 0}.pair img{width:300px}"
         "model-viewer{width:100%;height:520px;background:#f5f5f5}.hint{color:#555;font-size:90%}"
         ".files code{font-size:80%}.times td.timeline{width:60%}.bar{height:12px;background:#4a7fd0}"
         ".photos tr.flagged td{background:#fff4e5}.thumb img{max-width:160px;max-height:160px;display:block}"
         ".thumb figcaption{font-size:85%}")


@dataclass
class Content:
    title: str
    how: str  # how the model was made; shown when there is a model
    status: str
    workflow: str
    failures: list[dict[str, str]]
    notes: list[str]
    files: list[dict[str, Any]]  # manifest entries: path, size, sha256
    metrics: Any
    versions: dict[str, str]
    previews: dict[str, bytes] = field(default_factory=dict)  # name -> PNG, embedded
    cameras: dict[str, str] = field(default_factory=dict)  # caption -> report-relative picture
    num_cameras: int = 0
    photos: PhotoScores | None = None
    held_out: HeldOut | None = None  # the radiance field's held-out views beside its renders
    viewer: str | None = None  # the glb's path under files/
    draco: bool = False
    model_data: bool = False  # viewer/model-data.js was written (for a page opened from disk)
    timed: bool = False  # timings.js fills the step times


def _verdict(c: Content) -> list[str]:
    ok = c.status == "Succeeded" and not c.failures and c.files
    if c.status == "Rejected":
        items = [f"<p>Rejected by the <b>{html.escape(f['step'])}</b>: {html.escape(f['message'])}</p>"
                 for f in c.failures] or ["<p>Rejected; no reason was passed.</p>"]
        return ['<section class="failed"><h2>Rejected</h2>', *items, "</section>"]
    if ok:
        return [f'<section class="ok"><p>The model is ready: {len(c.files)} file(s) below'
                + (f", the photos of {c.num_cameras} camera position(s)" if c.num_cameras else "")
                + ".</p></section>"]
    if c.failures:
        items = [f"<p>Failed at step <b>{html.escape(f['step'])}</b> because {html.escape(f['message'])}</p>"
                 for f in c.failures]
    elif not c.files:
        items = ["<p>Failed: no model was produced and no failure details were passed.</p>"]
    else:
        items = [f"<p>The workflow ended as {html.escape(c.status)}; no failure details were passed.</p>"]
    return ['<section class="failed"><h2>Failed</h2>', *items, "</section>"]


def _viewer(c: Content) -> str:
    src = quote(f"{FILES}/{c.viewer}")  # a relative URL: a file name with a space or '#' still links
    poster = ' poster="preview_front.png"' if "preview_front.png" in c.previews else ""
    return (f'<h2>Model</h2><model-viewer src="{html.escape(src)}"{poster} camera-controls '
            f'touch-action="pan-y" shadow-intensity="1" alt="{html.escape(c.viewer or "")}, the delivered model">'
            "</model-viewer><p class='hint'>Drag to turn the model, scroll or pinch to zoom.</p>"
            '<p id="viewer-note" class="hint" hidden>The model did not load. Opened from disk, a browser lets this '
            "page read only the scripts beside it: serve this folder (<code>python3 -m http.server --directory "
            "&lt;this folder&gt;</code>, then open localhost:8000) or open it from its bucket.</p>"
            + _viewer_script(c))


def _viewer_script(c: Content) -> str:
    """Right after the viewer, before it starts loading (it loads once in view, a frame later): opened from disk,
    the model comes from model-data.js instead of ``src``, which the browser would refuse to fetch."""
    data = json.dumps(MODEL_DATA if c.model_data else "")
    return ("<script>(function () { var v = document.querySelector('model-viewer'), "
            "n = document.getElementById('viewer-note'); function show() { n.hidden = false; } "
            "v.addEventListener('error', show); if (location.protocol !== 'file:') return; "
            f"v.removeAttribute('src'); var data = {data}; if (!data) {{ show(); return; }} "
            "var s = document.createElement('script'); s.src = data; s.onerror = show; s.onload = function () { "
            "var b = atob(window.kaiModelGlb), a = new Uint8Array(b.length); "
            "for (var i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); "
            "v.src = URL.createObjectURL(new Blob([a], {type: 'model/gltf-binary'})); }; "
            "document.head.appendChild(s); })();</script>")


def model_data_script(glb: bytes) -> str:
    return f"window.kaiModelGlb = \"{base64.b64encode(glb).decode()}\";\n"


def _files(c: Content) -> str:
    rows = "".join(f'<tr><td><a href="{html.escape(quote(FILES + "/" + f["path"]))}" download>'
                   f"{html.escape(f['path'])}</a></td><td>{f['size']:,}</td><td><code>{f['sha256']}</code></td>"
                   "</tr>" for f in c.files)
    return ("<h2>Files</h2><table class='files'><tr><th>file</th><th>bytes</th><th>sha256</th></tr>"
            f"{rows}</table><p class='hint'>manifest.json lists the same files, sizes and checksums.</p>")


def page(c: Content) -> str:
    parts = [f"<h1>{html.escape(c.title)}: {html.escape(c.status)}</h1>"]
    if c.how and c.files:
        parts.append(f"<p>{html.escape(c.how)}</p>")
    if c.workflow:
        parts.append(f"<p>Workflow <b>{html.escape(c.workflow)}</b>.</p>")
    parts += _verdict(c)
    if c.notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in c.notes) + "</ul>")
    if c.viewer is not None:
        parts.append(_viewer(c))
    if c.previews:
        imgs = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
                       f'{base64.b64encode(b).decode()}"><figcaption>{html.escape(n)}</figcaption></figure>'
                       for n, b in c.previews.items())
        parts.append(f"<h2>Previews</h2><div class='previews'>{imgs}</div>")
    if c.cameras:
        imgs = "".join(f'<figure><img alt="{html.escape(cap)}" src="{html.escape(quote(src))}">'
                       f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, src in c.cameras.items())
        parts.append(f"<h2>Cameras</h2><p>Where the {c.num_cameras} photos were taken from, each drawn as a small "
                     "pyramid pointing the way its camera looked (the thick edge is the top of the picture).</p>"
                     f"<div class='previews cameras'>{imgs}</div>")
    if c.held_out is not None:
        parts.append(held_out_html(c.held_out))
    if c.photos is not None:
        parts.append(scores_html(c.photos))
    if c.timed:
        # The times are the one thing that differs between two runs of the same photos: they stay out of this
        # page's bytes, in timings.js (and timings.json), which fills this section.
        parts.append('<h2>Step times</h2><div id="step-times"><p class="hint">The step times are in timings.json '
                     "(this page draws them with JavaScript).</p></div><script src=\"timings.js\"></script>")
    if c.metrics not in ({}, None, [], ""):
        parts.append("<h2>Metrics</h2>" + tables.metrics(c.metrics))
    if c.files:
        parts.append(_files(c))
    parts.append("<h2>Software</h2>" + tables.table(c.versions))
    head = '<link rel="icon" href="data:,">'  # no request for /favicon.ico
    if c.viewer is not None:
        head += f'<script src="viewer/{VIEWER}"></script>'
        if c.draco:  # the default decoder location is Google's CDN; the decoder is copied beside the page
            head += "<script>customElements.get('model-viewer').dracoDecoderLocation = 'viewer/draco/';</script>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(c.title)}</title>"
            f"<style>{STYLE}</style>{head}</head><body>{''.join(parts)}</body></html>\n")


def _seconds(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-6 else f"{value:.2f}"


def times_table(rows: list[dict[str, Any]]) -> str:
    """The steps' times as a table with a timeline bar each (offset and length scaled to the whole run)."""
    span = max((r.get("offset", 0.0) + r["seconds"] for r in rows), default=0.0) or 1.0
    body = []
    for r in rows:
        left, width = 100 * r.get("offset", 0.0) / span, max(100 * r["seconds"] / span, 0.5)
        bar = (f'<div class="bar" style="margin-left:{left:.2f}%;width:{width:.2f}%"></div>'
               if "offset" in r else "")
        body.append(f"<tr><td>{html.escape(r['step'])}</td><td>{_seconds(r['seconds'])}</td>"
                    f'<td class="timeline">{bar}</td></tr>')
    argo = any("offset" in r for r in rows)
    total = (f"{_seconds(span)} s from the first step's start to the last one's finish; each step's time is "
             "Argo's, from its start to its finish (to the second), waiting for a node included" if argo
             else f"{_seconds(sum(r['seconds'] for r in rows))} s in all")
    return (f"<table class='times'><tr><th>step</th><th>wall time (s)</th><th>timeline</th></tr>{''.join(body)}"
            f"</table><p class='hint'>{html.escape(total)}.</p>")


def timings_script(rows: list[dict[str, Any]]) -> str:
    """timings.js: fills the page's step-times section (a script, not a fetch of timings.json: a page opened from
    disk may run a script beside it but not read a file)."""
    return f"document.getElementById('step-times').innerHTML = {json.dumps(times_table(rows))};\n"
