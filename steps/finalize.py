"""The last step of every run, the exit handler too: a manifest, three previews and a one-page HTML report.

It must not fail for want of a model: when ``models`` is absent (an earlier step failed) or the workflow did not
succeed, the report says which step failed and why, from Argo's ``workflow.failures`` JSON.

The report folder is self-contained, as it is downloaded from S3 or served from a bucket: the delivered files are
copied into ``files/`` and linked relatively, and the interactive viewer (Google's ``<model-viewer>``, vendored in
``viewer/``, see its README) is copied beside the page, which loads nothing from the network.

The report holds only what its inputs determine (no clock, no host): the same model and metrics give the same
bytes. The one exception is kept apart: the steps' times (``timings``, Argo's start and finish of each task) go to
``timings.json`` and ``timings.js``, which the page loads to draw its timeline, so ``index.html``, ``manifest.json``
and everything else stay byte-identical between two runs of the same photos.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import platform
import shutil
import struct
from datetime import datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import lazy_loader as lazy
from PIL import Image
from pydantic import BaseModel

from kai_flows.step import OptionalIn, Out, step
from kai_steps._io import staged_dir, write_json
from kai_steps._render import preview_views

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

VERSIONED = ("pycolmap", "open3d", "trimesh", "numpy", "opencv-python-headless", "usd-core")
# Preferred order for the preview source: PLY keeps vertex colours and loads fastest.
PREVIEW_SOURCES = (".ply", ".glb", ".obj", ".stl")
# The pipeline (or surface) that produced the model names the report and says how the model was made.
KINDS = {
    "reconstruction": ("Reconstruction report", "Photogrammetry: camera poses from structure from motion, dense "
                       "stereo depth maps, and a surface mesh from them."),
    "radiance-field": ("Radiance-field report", "A radiance field trained on the posed photos, its surface "
                       "extracted with marching cubes."),
}
FILES = "files"  # the delivered files, copied beside the page
VIEWER = "model-viewer-umd.min.js"  # a classic script: it loads the same from disk, a bucket or a CDN
# glTF extensions the vendored viewer decodes offline (Draco with viewer/draco/); others would need a decoder
# from a CDN, so such a glb is not shown.
DRACO = "KHR_draco_mesh_compression"
NEEDS_DECODER = ("EXT_meshopt_compression", "KHR_texture_basisu")


class FinalizeSummary(BaseModel):
    status: str
    num_files: int
    previews: list[str]
    failed_step: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_json(text: str, what: str, notes: list[str]) -> Any:
    """Lenient: an exit handler must still write its report when a caller passes bad JSON."""
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError as exc:
        notes.append(f"{what} is not valid JSON ({exc.msg} at char {exc.pos}); shown as text")
        return text


def _failures(value: Any, default_step: str = "unknown") -> list[dict[str, str]]:
    """Argo's workflow.failures: [{displayName, templateName, message, phase, podName, finishedAt}, ...]; plain
    strings (the quality gate's reasons for a rejection) are attributed to `default_step`."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [{"step": default_step, "message": str(value)}] if value else []
    out = []
    for f in value:
        if isinstance(f, dict):
            step_name = f.get("displayName") or f.get("templateName") or f.get("name") or "unknown"
            out.append({"step": str(step_name), "message": str(f.get("message") or "no message"),
                        "phase": str(f.get("phase", "Failed"))})
        else:
            out.append({"step": default_step, "message": str(f), "phase": "Failed"})
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _preview_source(files: list[Path]) -> Path | None:
    for ext in PREVIEW_SOURCES:
        for f in files:
            if f.suffix.lower() == ext:
                return f
    return None


def _render_previews(src: Path) -> dict[str, np.ndarray]:
    mesh = trimesh.load(src, process=False, force="mesh")
    if len(mesh.faces) == 0:
        raise ValueError(f"{src.name} has no faces")
    colors = None
    if mesh.visual.kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    return preview_views(np.asarray(mesh.vertices), np.asarray(mesh.faces), colors)


def _table(rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _kind(pipeline: str, metrics: Any) -> tuple[str, str]:
    """(title, how the model was made) from the pipeline's name, else from the steps whose metrics were passed."""
    if pipeline in KINDS:
        return KINDS[pipeline]
    if pipeline:
        return f"{pipeline.replace('-', ' ').capitalize()} report", ""
    keys = set(metrics) if isinstance(metrics, dict) else set()
    if "radiance_field" in keys:
        return KINDS["radiance-field"]
    if "point_cloud" in keys:
        return KINDS["reconstruction"]
    return "Model report", ""


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None


def _step_times(value: Any, notes: list[str]) -> list[dict[str, Any]]:
    """Each step's wall time from ``{"step": ["<startedAt>", "<finishedAt>"]}`` (Argo's ``tasks.<t>.startedAt`` and
    ``.finishedAt``, RFC 3339 to the second), ``{"step": {"startedAt": .., "finishedAt": ..}}`` or
    ``{"step": seconds}``; in the order the steps started where that is known."""
    if not value:
        return []
    if not isinstance(value, dict):
        notes.append("timings is not a JSON object of steps; no step times shown")
        return []
    rows: list[dict[str, Any]] = []
    for step_name, v in value.items():
        row: dict[str, Any] = {"step": str(step_name)}
        if isinstance(v, dict):
            v = [v.get("startedAt"), v.get("finishedAt")]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            row["seconds"] = float(v)
        elif isinstance(v, list) and len(v) == 2:
            start, end = _when(v[0]), _when(v[1])
            if start is None or end is None or start.tzinfo is None or end.tzinfo is None:
                notes.append(f"step {step_name}: start {v[0]!r} or finish {v[1]!r} is not an RFC 3339 time")
                continue
            row.update(startedAt=str(v[0]), finishedAt=str(v[1]), seconds=(end - start).total_seconds(),
                       start=start)
        else:
            notes.append(f"step {step_name}: {v!r} is neither seconds nor a [start, finish] pair")
            continue
        rows.append(row)
    first = min((r["start"] for r in rows if "start" in r), default=None)
    for r in rows:
        if first is not None and "start" in r:
            r["offset"] = (r.pop("start") - first).total_seconds()
    if first is not None:  # times are to the second: steps started in the same second keep the pipeline's order
        order = {r["step"]: i for i, r in enumerate(rows)}
        rows.sort(key=lambda r: (r.get("offset", float("inf")), order[r["step"]]))
    return rows


def _times_table(rows: list[dict[str, Any]]) -> str:
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


def _seconds(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-6 else f"{value:.2f}"


def _glb_extensions(path: Path) -> set[str]:
    """The glTF extensions a binary glTF uses (its JSON chunk's extensionsUsed and extensionsRequired)."""
    with path.open("rb") as f:
        head = f.read(20)
        if len(head) < 20 or head[:4] != b"glTF":
            raise ValueError(f"{path.name} is not a binary glTF")
        length, chunk = struct.unpack("<II", head[8:16])  # header: magic, version, length; then chunk 0
        if head[16:20] != b"JSON" or chunk > length:
            raise ValueError(f"{path.name} has no JSON chunk first")
        doc = json.loads(f.read(chunk))
    return set(doc.get("extensionsUsed", [])) | set(doc.get("extensionsRequired", []))


def _viewer_model(files: list[Path], base: Path | None, notes: list[str]) -> tuple[str, bool] | None:
    """(path of the glb under files/, whether it needs the Draco decoder) for the viewer, or None with a note."""
    glbs = [f for f in files if f.suffix.lower() == ".glb"]
    if not glbs:
        if files:
            notes.append("no glb among the models: the interactive viewer shows glb only")
        return None
    glb = next((f for f in glbs if f.name == "model.glb"), glbs[0])
    rel = str(glb.relative_to(base)) if base else glb.name
    try:
        used = _glb_extensions(glb)
    except (OSError, ValueError) as exc:
        notes.append(f"{rel} cannot be shown in the viewer: {exc}")
        return None
    missing = sorted(used & set(NEEDS_DECODER))
    if missing:
        notes.append(f"{rel} uses {', '.join(missing)}, which the report's offline viewer cannot decode; "
                     "see the previews")
        return None
    return rel, DRACO in used


def _copy_viewer(out: Path, draco: bool) -> None:
    """The vendored viewer (and the Draco decoder when the glb needs it) beside the page, with their licences."""
    src = resources.files("kai_steps").joinpath("viewer")
    (out / "viewer").mkdir()
    for name in (VIEWER, "LICENSE", "NOTICE", "README.md"):
        (out / "viewer" / name).write_bytes(src.joinpath(name).read_bytes())
    if draco:
        (out / "viewer" / "draco").mkdir()
        for name in ("draco_wasm_wrapper.js", "draco_decoder.wasm"):
            (out / "viewer" / "draco" / name).write_bytes(src.joinpath("draco", name).read_bytes())


def _html(status: str, failures: list[dict[str, str]], previews: dict[str, bytes], manifest: dict[str, Any],
          notes: list[str], kind: tuple[str, str], viewer: tuple[str, bool] | None, timed: bool) -> str:
    title, how = kind
    ok = status == "Succeeded" and not failures and manifest["files"]
    parts = [f"<h1>{html.escape(title)}: {html.escape(status)}</h1>"]
    if how and manifest["files"]:
        parts.append(f"<p>{html.escape(how)}</p>")
    if manifest["workflow"]:
        parts.append(f"<p>Workflow <b>{html.escape(manifest['workflow'])}</b>.</p>")
    if status == "Rejected":
        parts.append('<section class="failed"><h2>Rejected</h2>')
        parts += [f"<p>Rejected by the <b>{html.escape(f['step'])}</b>: {html.escape(f['message'])}</p>"
                  for f in failures] or ["<p>Rejected; no reason was passed.</p>"]
        parts.append("</section>")
    elif not ok:
        parts.append('<section class="failed"><h2>Failed</h2>')
        if failures:
            parts += [f"<p>Failed at step <b>{html.escape(f['step'])}</b> because {html.escape(f['message'])}</p>"
                      for f in failures]
        elif not manifest["files"]:
            parts.append("<p>Failed: no model was produced and no failure details were passed.</p>")
        else:
            parts.append(f"<p>The workflow ended as {html.escape(status)}; no failure details were passed.</p>")
        parts.append("</section>")
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if viewer is not None:
        src = quote(f"{FILES}/{viewer[0]}")  # a relative URL: a file name with a space or '#' still links
        poster = ' poster="preview_front.png"' if "preview_front.png" in previews else ""
        parts.append(
            f'<h2>Model</h2><model-viewer src="{html.escape(src)}"{poster} camera-controls touch-action="pan-y" '
            f'shadow-intensity="1" alt="{html.escape(viewer[0])}, the delivered model"></model-viewer>'
            '<p class="hint">Drag to turn the model, scroll or pinch to zoom.</p>'
            '<p id="viewer-note" class="hint" hidden>The model did not load: browsers do not let a page opened '
            "from disk read other files. Serve this folder (<code>python3 -m http.server --directory "
            "&lt;this folder&gt;</code>, then open localhost:8000) or open it from its bucket.</p>")
    if previews:
        imgs = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
                       f'{base64.b64encode(b).decode()}"><figcaption>{html.escape(n)}</figcaption></figure>'
                       for n, b in previews.items())
        parts.append(f"<h2>Previews</h2><div class='previews'>{imgs}</div>")
    if isinstance(manifest["metrics"], dict) and manifest["metrics"]:
        parts.append("<h2>Metrics</h2>" + _table(manifest["metrics"]))
    if timed:
        # The times are the one thing that differs between two runs of the same photos: they stay out of this
        # page's bytes, in timings.js (and timings.json), which fills this section.
        parts.append('<h2>Step times</h2><div id="step-times"><p class="hint">The step times are in timings.json '
                     "(this page draws them with JavaScript).</p></div><script src=\"timings.js\"></script>")
    if manifest["files"]:
        rows = "".join(f'<tr><td><a href="{html.escape(quote(FILES + "/" + f["path"]))}" download>'
                       f"{html.escape(f['path'])}</a></td><td>{f['size']:,}</td><td><code>{f['sha256']}</code></td>"
                       "</tr>" for f in manifest["files"])
        parts.append("<h2>Files</h2><table class='files'><tr><th>file</th><th>bytes</th><th>sha256</th></tr>"
                     f"{rows}</table><p class='hint'>manifest.json lists the same files, sizes and checksums.</p>")
    head = ""
    if viewer is not None:
        head = f'<script src="viewer/{VIEWER}"></script>'
        if viewer[1]:  # the default decoder location is Google's CDN; the decoder is copied beside the page
            head += "<script>customElements.get('model-viewer').dracoDecoderLocation = 'viewer/draco/';</script>"
        parts.append("<script>(function () { var v = document.querySelector('model-viewer'), "
                     "n = document.getElementById('viewer-note'); function show() { n.hidden = false; } "
                     "if (location.protocol === 'file:') show(); v.addEventListener('error', show); })();</script>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.failed{background:#fde8e8;"
             "border:1px solid #c33;padding:0 1em}.previews{display:flex;gap:8px}figure{margin:0}img{width:320px}"
             "model-viewer{width:100%;height:520px;background:#f5f5f5}.hint{color:#555;font-size:90%}"
             ".files code{font-size:80%}.times td.timeline{width:60%}.bar{height:12px;background:#4a7fd0}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style>{head}</head><body>{''.join(parts)}</body></html>\n")


def _timings_script(rows: list[dict[str, Any]]) -> str:
    """timings.js: fills the page's step-times section (a script, not a fetch of timings.json: a page opened from
    disk may run a script beside it but not read a file)."""
    return f"document.getElementById('step-times').innerHTML = {json.dumps(_times_table(rows))};\n"


# Peak RSS measured: 0.47 GiB rendering previews of a 200k-face mesh.
@step(image="export", cpu="1", memory="1Gi", pool="cpu-optimized", retries=1, timeout="15m")
def finalize(
    models: OptionalIn[Path],
    report: Out[Path],
    workflow_status: str = "Succeeded",
    failures: str = "[]",
    metrics: str = "{}",
    timings: str = "{}",
    workflow_name: str = "",
    pipeline: str = "",
) -> FinalizeSummary:
    """Write ``report/index.html`` (with the interactive model), ``report/manifest.json``,
    ``report/preview_{front,left,right}.png``, the delivered files under ``report/files/`` and the viewer under
    ``report/viewer/``; with ``timings``, ``report/timings.json`` and ``report/timings.js``.

    ``pipeline`` names the report and says how the model was made (``reconstruction``, ``radiance-field``);
    ``timings`` is ``{"step": ["<startedAt>", "<finishedAt>"]}`` as Argo fills it, or ``{"step": seconds}``."""
    notes: list[str] = []
    failure_list = _failures(_parse_json(failures, "failures", notes),
                             "quality-gate" if workflow_status == "Rejected" else "unknown")
    metric_values = _parse_json(metrics, "metrics", notes) or {}
    times = _step_times(_parse_json(timings, "timings", notes), notes)
    files: list[Path] = []
    if models is not None and Path(models).exists():
        root = Path(models)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    elif workflow_status == "Succeeded":
        notes.append("no models artifact was passed to the finalizer")
    base = Path(models) if models is not None and Path(models).is_dir() else None
    kind = _kind(pipeline, metric_values)
    manifest: dict[str, Any] = {
        "workflow": workflow_name,
        "pipeline": pipeline,
        "status": workflow_status,
        "failures": failure_list,
        "files": [{"path": str(p.relative_to(base)) if base else p.name, "size": p.stat().st_size,
                   "sha256": _sha256(p)} for p in files],
        "metrics": metric_values,
        "versions": _versions(),
    }
    previews: dict[str, bytes] = {}
    src = _preview_source(files)
    if src is not None:
        try:
            for name, img in _render_previews(src).items():
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                previews[f"preview_{name}.png"] = buf.getvalue()
        except Exception as exc:  # a broken model must not cost the report; say so in it instead
            notes.append(f"previews could not be rendered from {src.name}: {exc}")
    elif files:
        notes.append("no mesh file (ply, glb, obj, stl) among the models to render previews from")
    viewer = _viewer_model(files, base, notes)
    manifest["viewer"] = f"{FILES}/{viewer[0]}" if viewer else None
    manifest["notes"] = notes
    with staged_dir(Path(report)) as out:
        for name, data in previews.items():
            (out / name).write_bytes(data)
        for f, entry in zip(files, manifest["files"], strict=True):
            (out / FILES / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / FILES / entry["path"])
        if viewer is not None:
            _copy_viewer(out, viewer[1])
        if times:
            write_json(out / "timings.json", {"steps": times})
            (out / "timings.js").write_text(_timings_script(times))
        write_json(out / "manifest.json", manifest)
        (out / "index.html").write_text(_html(workflow_status, failure_list, previews, manifest, notes, kind, viewer,
                                              bool(times)))
    failed = failure_list[0]["step"] if failure_list else ("" if workflow_status == "Succeeded" else "unknown")
    return FinalizeSummary(status=workflow_status, num_files=len(files), previews=sorted(previews),
                           failed_step=failed)
