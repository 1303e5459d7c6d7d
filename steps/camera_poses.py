"""Camera pose estimation: incremental structure-from-motion with pycolmap (SIFT and mapping on the CPU).

``images`` is either a preprocess output (``images/`` plus ``camera_prior.json``) or a plain folder of photos
(optionally with a ``K.txt``). Images that share intrinsics share one camera. With exact intrinsics (a K.txt) the
focal length stays fixed while the principal point and radial distortion are refined: on the Strecha sets this more
than halves the camera position error of plain pycolmap, which has to estimate the focal length and keeps the
principal point at the image centre.

Output: ``sparse/0/{cameras,images,points3D}.bin`` and ``sparse/summary.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import lazy_loader as lazy
from PIL import ExifTags, Image
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import image_folder
from kai_steps._imageio import IMAGE_SUFFIXES

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
pycolmap = lazy.load("pycolmap")

MIN_IMAGES = 3
EXHAUSTIVE_MAX = 60  # above this many images "auto" pairs each image with its sequence neighbours only


class PoseEstimationError(ValueError):
    """Structure-from-motion could not pose enough of the images (one-line message naming them)."""


class PoseSummary(BaseModel):
    registered: int
    total: int
    points: int
    mean_reprojection_error: float
    mean_track_length: float
    unregistered: list[str]
    camera_prior: str  # "exact", "approximate", "mixed" or "none"
    matcher_used: str


class _Group:
    """Images taken with one camera: extracted in one call so they share one COLMAP camera."""

    def __init__(self, model: str, params: tuple[float, ...] | None, exact: bool):
        self.model, self.params, self.exact, self.names = model, params, exact, []


def _image_dir(images: Path) -> tuple[Path, dict, dict]:
    """Where the photos are, the per-image prior intrinsics and camera labels (both possibly empty)."""
    folder = image_folder(images)
    if folder == images:
        return images, {}, {}
    priors = json.loads((images / "camera_prior.json").read_text()).get("images", {})
    report = images / "preprocess.json"
    records = json.loads(report.read_text()).get("images", []) if report.is_file() else []
    return folder, priors, {r["name"]: r.get("camera", "") for r in records}


def _header(path: Path) -> tuple[tuple[int, int], Image.Exif]:
    """Size and EXIF from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size, im.getexif()
    except (OSError, SyntaxError, ValueError) as exc:
        raise PoseEstimationError(f"cannot read image {path.name}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                                  " (the preprocess step skips such files)") from None


def _camera_label(path: Path, labels: dict) -> tuple:
    """What tells cameras apart when there is no prior: image size, EXIF make/model and focal length."""
    size, exif = _header(path)
    focal = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.FocalLength)
    make_model = labels.get(path.name) or f"{exif.get(ExifTags.Base.Make)} {exif.get(ExifTags.Base.Model)}"
    return size, make_model, str(focal)


def _k_txt_priors(image_dir: Path, names: list[str]) -> dict:
    """Priors from a K.txt beside raw photos: it applies to the images of the most common size."""
    k_path = next((p for p in image_dir.iterdir() if p.name.lower() == "k.txt"), None)
    if k_path is None:
        return {}
    try:
        K = np.array(k_path.read_text().split(), dtype=float).reshape(3, 3)
    except ValueError:
        raise PoseEstimationError(f"{k_path}: not a 3x3 intrinsic matrix") from None
    sizes = {n: _header(image_dir / n)[0] for n in names}
    common = max(set(sizes.values()), key=list(sizes.values()).count)
    return {n: {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "exact": True}
            for n, s in sizes.items() if s == common}


def _groups(image_dir: Path, names: list[str], priors: dict, labels: dict) -> list[_Group]:
    groups: dict[tuple, _Group] = {}
    for n in names:
        p = priors.get(n)
        if p is None:
            # No prior: COLMAP reads the EXIF focal length itself; one camera per size, make, model and focal.
            key = ("none", *_camera_label(image_dir / n, labels))
            groups.setdefault(key, _Group("SIMPLE_RADIAL", None, False)).names.append(n)
        else:
            # SIMPLE_RADIAL even for a known K: a K.txt rarely says whether the photos are undistorted (Strecha's
            # are, sceaux_castle's are not: PINHOLE there doubles the reprojection error).
            params = (round((float(p["fx"]) + float(p["fy"])) / 2, 6), round(float(p["cx"]), 6),
                      round(float(p["cy"]), 6), 0.0)
            exact = bool(p.get("exact"))
            groups.setdefault((exact, params), _Group("SIMPLE_RADIAL", params, exact)).names.append(n)
    return list(groups.values())


def _prior_kind(groups: list[_Group]) -> str:
    kinds = {"exact" if g.exact else "approximate" if g.params else "none" for g in groups}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _reader_options(g: _Group) -> pycolmap.ImageReaderOptions:
    ro = pycolmap.ImageReaderOptions()
    ro.camera_model = g.model
    if g.params:
        ro.camera_params = ",".join(f"{v:.6f}" for v in g.params)
    return ro


def _sfm(image_dir: Path, groups: list[_Group], use: str, work: Path, max_image_size: int, num_threads: int,
         seed: int, deterministic: bool) -> tuple[dict[int, pycolmap.Reconstruction], dict[str, float]]:
    """Extract (one call per camera group), match and map; the database lives in ``work``.

    Reproducible with threads where pycolmap allows it: images are registered one by one in name order before the
    threaded extraction (its writer numbers new images in the order threads finish them, and pairs, mapping order
    and the model's ids all follow those numbers), and every two-view RANSAC restarts from ``seed`` (otherwise each
    worker thread's generator carries on from whichever pairs it happened to verify before). Mapping is the one
    stage that is not: Ceres sums bundle-adjustment residuals across threads in scheduling order, and the initial
    pair search races between threads; ``deterministic`` maps on one thread.
    """
    timings = {}
    db = work / "database.db"
    pycolmap.Database.open(str(db)).close()
    t = time.perf_counter()
    eo = pycolmap.FeatureExtractionOptions()
    eo.max_image_size, eo.num_threads = max_image_size, num_threads
    for g in groups:
        ro = _reader_options(g)
        pycolmap.import_images(db, image_dir, pycolmap.CameraMode.SINGLE, g.names, ro)
        pycolmap.extract_features(db, image_dir, image_names=g.names, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=ro, extraction_options=eo, device=pycolmap.Device.cpu)
    timings["extract_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = num_threads
    vo = pycolmap.TwoViewGeometryOptions()
    vo.ransac.random_seed = seed
    if use == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=mo, verification_options=vo, device=pycolmap.Device.cpu)
    else:
        so = pycolmap.SequentialPairingOptions(overlap=10, quadratic_overlap=True)
        pycolmap.match_sequential(db, matching_options=mo, pairing_options=so, verification_options=vo,
                                  device=pycolmap.Device.cpu)
    timings["match_s"] = time.perf_counter() - t
    t = time.perf_counter()
    po = pycolmap.IncrementalPipelineOptions()
    po.num_threads, po.random_seed = 1 if deterministic else num_threads, seed
    if all(g.exact for g in groups):
        # Known intrinsics: keep the focal length, refine the principal point (often off-centre by tens of px)
        # and the radial distortion.
        po.ba_refine_focal_length, po.ba_refine_principal_point, po.ba_refine_extra_params = False, True, True
    recs = pycolmap.incremental_mapping(db, image_dir, work / "models", options=po)
    timings["map_s"] = time.perf_counter() - t
    return recs, timings


@step(image="sfm", cpu="2", memory="6Gi", pool="cpu-optimized", timeout="2h")
def camera_poses(images: In[Path], sparse: Out[Path], matcher: Literal["auto", "exhaustive", "sequential"] = "auto",
                 min_registered_fraction: float = 0.6, max_image_size: int = 1600, num_threads: int = 2,
                 seed: int = 0, deterministic: bool = True) -> PoseSummary:
    """Pose the photos in ``images`` and write the COLMAP model and a summary into ``sparse``.

    With ``deterministic`` the same photos and parameters give the same model bytes (mapping runs on one thread;
    extraction and matching keep ``num_threads``)."""
    images, sparse = Path(images), Path(sparse)
    if not images.is_dir():
        raise PoseEstimationError(f"input image folder {images} does not exist or is not a folder")
    if not 0.0 <= min_registered_fraction <= 1.0:
        raise PoseEstimationError(f"min_registered_fraction must be within 0..1, got {min_registered_fraction}")
    if sparse.exists():
        raise PoseEstimationError(f"output folder already exists: {sparse}")
    image_dir, priors, labels = _image_dir(images)
    names = sorted(p.name for p in image_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if len(names) < MIN_IMAGES:
        raise PoseEstimationError(f"{len(names)} images in {image_dir}: structure-from-motion needs at least "
                                  f"{MIN_IMAGES} overlapping photos")
    if not priors:
        priors = _k_txt_priors(image_dir, names)
    groups = _groups(image_dir, names, priors, labels)
    use = "exhaustive" if matcher == "exhaustive" or (matcher == "auto" and len(names) <= EXHAUSTIVE_MAX) \
        else "sequential"

    pycolmap.set_random_seed(seed)
    tmp = sparse.with_name(f".{sparse.name}.partial")  # publish the folder whole or not at all
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory(prefix="kai-sfm-") as work:
            recs, timings = _sfm(image_dir, groups, use, Path(work), max_image_size, num_threads, seed,
                                  deterministic)
    except RuntimeError as exc:  # pycolmap reports failures as RuntimeErrors with long C++ messages
        raise PoseEstimationError(f"pycolmap failed on {image_dir}: {str(exc).strip().splitlines()[0]}") from None

    if not recs:
        raise PoseEstimationError(f"no reconstruction from the {len(names)} images in {image_dir}: no image pair "
                                  "shares enough matched features (do the photos overlap?)")
    rec = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    posed = {img.name for img in rec.images.values() if img.has_pose}
    missing = [n for n in names if n not in posed]
    if len(posed) < min_registered_fraction * len(names):
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise PoseEstimationError(f"only {len(posed)} of {len(names)} images were posed (below the required "
                                  f"{min_registered_fraction:.0%}); not posed: {shown}")
    summary = PoseSummary(
        registered=len(posed), total=len(names), points=rec.num_points3D(),
        mean_reprojection_error=float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else 0.0,
        mean_track_length=float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0,
        unregistered=missing, camera_prior=_prior_kind(groups), matcher_used=use)
    (tmp / "0").mkdir(parents=True)
    rec.write(tmp / "0")
    report = {**summary.model_dump(), "registered_images": sorted(posed), "models_found": len(recs),
              "cameras": {int(c.camera_id): {"model": c.model_name, "params": list(map(float, c.params))}
                          for c in rec.cameras.values()},
              "options": {"matcher": matcher, "max_image_size": max_image_size, "num_threads": num_threads,
                          "seed": seed, "deterministic": deterministic,
                          "min_registered_fraction": min_registered_fraction}}
    # Durations go to the step's log (and run.json), not into the model folder: same photos, same bytes.
    print("camera_poses timings: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), file=sys.stderr)
    (tmp / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    tmp.rename(sparse)
    return summary
