"""The last step of every run, the exit handler too: a manifest, three previews and a one-page HTML report.

It must not fail for want of a model: when ``models`` is absent (an earlier step failed) or the workflow did not
succeed, the report says which step failed and why, from Argo's ``workflow.failures`` JSON.

The report holds only what its inputs determine (no clock, no host): the same model and metrics give the same
bytes. When and how long a run took is the engine's record (``run.json``), not the report's.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

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


def _html(status: str, failures: list[dict[str, str]], previews: dict[str, bytes], manifest: dict[str, Any],
          notes: list[str]) -> str:
    ok = status == "Succeeded" and not failures and manifest["files"]
    parts = [f"<h1>Reconstruction report: {html.escape(status)}</h1>"]
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
    if previews:
        imgs = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
                       f'{base64.b64encode(b).decode()}"><figcaption>{html.escape(n)}</figcaption></figure>'
                       for n, b in previews.items())
        parts.append(f"<h2>Previews</h2><div class='previews'>{imgs}</div>")
    if isinstance(manifest["metrics"], dict) and manifest["metrics"]:
        parts.append("<h2>Metrics</h2>" + _table(manifest["metrics"]))
    if isinstance(manifest["timings"], dict) and manifest["timings"]:
        parts.append("<h2>Step timings (s)</h2>" + _table(manifest["timings"]))
    if manifest["files"]:
        rows = "".join(f"<tr><td>{html.escape(f['path'])}</td><td>{f['size']:,}</td><td><code>{f['sha256'][:16]}"
                       "</code></td></tr>" for f in manifest["files"])
        parts.append(f"<h2>Files</h2><table><tr><th>file</th><th>bytes</th><th>sha256</th></tr>{rows}</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.failed{background:#fde8e8;"
             "border:1px solid #c33;padding:0 1em}.previews{display:flex;gap:8px}figure{margin:0}img{width:320px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Reconstruction report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


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
) -> FinalizeSummary:
    """Write ``report/manifest.json``, ``report/preview_{front,left,right}.png`` and ``report/index.html``."""
    notes: list[str] = []
    failure_list = _failures(_parse_json(failures, "failures", notes),
                             "quality-gate" if workflow_status == "Rejected" else "unknown")
    metric_values = _parse_json(metrics, "metrics", notes) or {}
    timing_values = _parse_json(timings, "timings", notes) or {}
    files: list[Path] = []
    if models is not None and Path(models).exists():
        root = Path(models)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    elif workflow_status == "Succeeded":
        notes.append("no models artifact was passed to the finalizer")
    base = Path(models) if models is not None and Path(models).is_dir() else None
    manifest: dict[str, Any] = {
        "workflow": workflow_name,
        "status": workflow_status,
        "failures": failure_list,
        "files": [{"path": str(p.relative_to(base)) if base else p.name, "size": p.stat().st_size,
                   "sha256": _sha256(p)} for p in files],
        "metrics": metric_values,
        "timings": timing_values,
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
    manifest["notes"] = notes
    with staged_dir(Path(report)) as out:
        for name, data in previews.items():
            (out / name).write_bytes(data)
        write_json(out / "manifest.json", manifest)
        (out / "index.html").write_text(_html(workflow_status, failure_list, previews, manifest, notes))
    failed = failure_list[0]["step"] if failure_list else ("" if workflow_status == "Succeeded" else "unknown")
    return FinalizeSummary(status=workflow_status, num_files=len(files), previews=sorted(previews),
                           failed_step=failed)
