"""The last step of every run, the exit handler too: a manifest, three previews and a one-page HTML report.

The page (``_report_page``) shows the verdict, the model in an interactive viewer, the previews, the cameras drawn
around the model (``_report_cameras``, from camera_poses' ``sparse``), the quality gate's score for every photo with
thumbnails of the flagged ones (``_report_photos``), the step times as a timeline, and the metrics as tables
(``_report_tables``), never as JSON.

It must not fail for want of a model: when ``models`` is absent (an earlier step failed) or the workflow did not
succeed, the report says which step failed and why, from Argo's ``workflow.failures`` JSON.

The report folder is self-contained, as it is downloaded from S3 or served from a bucket: the delivered files are
copied into ``files/`` and linked relatively, and the interactive viewer (Google's ``<model-viewer>``, vendored in
``viewer/``, see its README) is copied beside the page, which loads nothing from the network. Opened from disk,
where a browser lets the page run scripts beside it but not read files, it shows the glb from
``viewer/model-data.js``, the same bytes in a script.

The report holds only what its inputs determine (no clock, no host): the same model and metrics give the same
bytes. The one exception is kept apart: the steps' times (``timings``, Argo's start and finish of each task) go to
``timings.json`` and ``timings.js``, which the page loads to draw its timeline, so ``index.html``, ``manifest.json``
and everything else stay byte-identical between two runs of the same photos.
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import struct
from datetime import datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import lazy_loader as lazy
from PIL import Image
from pydantic import BaseModel

from kai_flows.step import OptionalIn, Out, step
from kai_steps._io import sha256_file, staged_dir, write_json
from kai_steps._render import preview_views
from kai_steps._report_cameras import camera_pictures, load_cameras, viewer_from_model
from kai_steps._report_held_out import held_out_views
from kai_steps._report_page import FILES, MODEL_DATA, VIEWER, Content, model_data_script, page, timings_script
from kai_steps._report_photos import read_scores

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
MODEL_DATA_MAX = 64 << 20  # a larger glb is not copied into viewer/model-data.js: serve the folder to see it
CAMERA_CAPTIONS = {"cameras_above.png": "from above, the model's front at the bottom",
                   "cameras_side.png": "from the front, 15 degrees up"}
# glTF extensions the vendored viewer decodes offline (Draco with viewer/draco/); others would need a decoder
# from a CDN, so such a glb is not shown.
DRACO = "KHR_draco_mesh_compression"
NEEDS_DECODER = ("EXT_meshopt_compression", "KHR_texture_basisu")


class FinalizeSummary(BaseModel):
    status: str
    num_files: int
    previews: list[str]
    failed_step: str
    cameras: int = 0  # posed photos drawn around the model
    photos: int = 0  # photos in the quality gate's table



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


def _load_mesh(src: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices, faces, vertex colours in [0, 1] or None) of the preview source."""
    mesh = trimesh.load(src, process=False, force="mesh")
    if len(mesh.faces) == 0:
        raise ValueError(f"{src.name} has no faces")
    colors = None
    if mesh.visual.kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    return np.asarray(mesh.vertices), np.asarray(mesh.faces), colors


def _png(img: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format="PNG")
    return buf.getvalue()


def _camera_pictures(mesh: tuple | None, sparse: Path | None, frames: tuple[Path | None, ...],
                     notes: list[str]) -> tuple[dict[str, bytes], int]:
    """The cameras drawn around the model ({file name: PNG}) and how many, or nothing with a note saying why."""
    if sparse is None or not Path(sparse).exists():
        return {}, 0
    if mesh is None:
        notes.append("the cameras are not drawn: there is no model to draw them around")
        return {}, 0
    rotation = viewer_from_model(*frames)
    if rotation is None:
        notes.append("the cameras are not drawn: no summary.json passed records viewer_from_model, the rotation "
                     "from the camera poses' frame to the model's")
        return {}, 0
    vertices, faces, colors = mesh
    try:
        cams = load_cameras(Path(sparse), rotation, float(np.ptp(vertices, axis=0).max()))
    except ValueError as exc:
        notes.append(f"the cameras are not drawn: {exc}")
        return {}, 0
    if not cams:
        notes.append("the cameras are not drawn: the camera poses hold no posed photo")
        return {}, 0
    return {f"{name}.png": _png(img) for name, img in camera_pictures(vertices, faces, colors, cams).items()}, len(cams)


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
    sparse: OptionalIn[Path] = None,
    mesh: OptionalIn[Path] = None,
    quality: OptionalIn[Path] = None,
    images: OptionalIn[Path] = None,
    held_out: OptionalIn[Path] = None,
) -> FinalizeSummary:
    """Write ``report/index.html`` (with the interactive model), ``report/manifest.json``,
    ``report/preview_{front,left,right}.png``, the delivered files under ``report/files/`` and the viewer under
    ``report/viewer/`` (with ``viewer/model-data.js``, the glb for a page opened from disk); with ``timings``,
    ``report/timings.json`` and ``report/timings.js``.

    ``pipeline`` names the report and says how the model was made (``reconstruction``, ``radiance-field``);
    ``timings`` is ``{"step": ["<startedAt>", "<finishedAt>"]}`` as Argo fills it, or ``{"step": seconds}``.
    Optional, each adding a section: ``sparse`` (camera_poses' COLMAP model) draws the cameras around the model in
    ``report/cameras_{above,side}.png``, placed by the ``viewer_from_model`` that the models' or ``mesh``'s
    summary.json records; ``quality`` (the quality gate's report folder) lists every photo's scores, and with
    ``images`` (the photos) shows thumbnails of the flagged ones (``report/photos/``); ``held_out`` (the radiance
    field's ``held_out/`` renders) shows each held-out photo beside the field's render with its PSNR and SSIM
    (``report/held_out/``)."""
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
    title, how = _kind(pipeline, metric_values)
    manifest: dict[str, Any] = {
        "workflow": workflow_name,
        "pipeline": pipeline,
        "status": workflow_status,
        "failures": failure_list,
        "files": [{"path": str(p.relative_to(base)) if base else p.name, "size": p.stat().st_size,
                   "sha256": sha256_file(p)} for p in files],
        "metrics": metric_values,
        "versions": _versions(),
    }
    previews: dict[str, bytes] = {}
    loaded = None
    src = _preview_source(files)
    if src is not None:
        try:
            loaded = _load_mesh(src)
            previews = {f"preview_{name}.png": _png(img) for name, img in preview_views(*loaded).items()}
        except Exception as exc:  # a broken model must not cost the report; say so in it instead
            notes.append(f"previews could not be rendered from {src.name}: {exc}")
    elif files:
        notes.append("no mesh file (ply, glb, obj, stl) among the models to render previews from")
    cameras, num_cameras = _camera_pictures(loaded, sparse, (base, mesh), notes)
    photos = None
    if quality is not None and Path(quality).exists():
        photos = read_scores(Path(quality), Path(images) if images is not None and Path(images).is_dir() else None,
                             notes)
    views = held_out_views(Path(held_out) if held_out is not None else None,
                           Path(images) if images is not None else None, notes)
    viewer = _viewer_model(files, base, notes)
    glb = (base / viewer[0] if base else files[0]) if viewer else None
    # Opened from disk the page reads the glb from a script (see _report_page); not for a Draco glb, whose
    # decoder a page on disk cannot fetch either, nor a huge one.
    model_data = glb is not None and not viewer[1] and glb.stat().st_size <= MODEL_DATA_MAX
    manifest["viewer"] = f"{FILES}/{viewer[0]}" if viewer else None
    manifest["notes"] = notes
    content = Content(title=title, how=how, status=workflow_status, workflow=workflow_name, failures=failure_list,
                      notes=notes, files=manifest["files"], metrics=metric_values, versions=manifest["versions"],
                      previews=previews, cameras={CAMERA_CAPTIONS[n]: n for n in cameras}, num_cameras=num_cameras,
                      photos=photos, held_out=views, viewer=viewer[0] if viewer else None,
                      draco=bool(viewer and viewer[1]), model_data=model_data, timed=bool(times))
    with staged_dir(Path(report)) as out:
        for name, data in {**previews, **cameras, **(photos.thumbs if photos else {}),
                           **(views.files if views else {})}.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        for f, entry in zip(files, manifest["files"], strict=True):
            (out / FILES / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / FILES / entry["path"])
        if viewer is not None:
            _copy_viewer(out, viewer[1])
            if model_data:
                (out / MODEL_DATA).write_text(model_data_script(glb.read_bytes()))
        if times:
            write_json(out / "timings.json", {"steps": times})
            (out / "timings.js").write_text(timings_script(times))
        write_json(out / "manifest.json", manifest)
        (out / "index.html").write_text(page(content))
    failed = failure_list[0]["step"] if failure_list else ("" if workflow_status == "Succeeded" else "unknown")
    return FinalizeSummary(status=workflow_status, num_files=len(files), previews=sorted(previews),
                           failed_step=failed, cameras=num_cameras, photos=len(photos.rows) if photos else 0)
