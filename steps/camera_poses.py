"""Camera pose estimation: incremental structure-from-motion with pycolmap (SIFT and mapping on the CPU).

``images`` is either a preprocess output (``images/`` plus ``camera_prior.json``) or a plain folder of photos
(optionally with a ``K.txt``). Images that share intrinsics share one camera. With exact intrinsics (a K.txt) the
focal length stays fixed while the principal point and radial distortion are refined: on the Strecha sets this more
than halves the camera position error of plain pycolmap, which has to estimate the focal length and keeps the
principal point at the image centre.

Pairs to match: all of them up to EXHAUSTIVE_MAX photos; above, a constant number per photo (steps/_pairs.py), so
matching grows linearly with the set. The summary records the pairing and the matched and verified pair counts.

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
from kai_steps._pairs import retrieval_pairs, sequential_pairs, write_pair_list
from kai_steps.sizing import MEMORY_MAX

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
pycolmap = lazy.load("pycolmap")

MIN_IMAGES = 3
# Above this many images "auto" stops matching every pair. Matching costs ~40 ms CPU a pair here (SIFT, 960x720):
# all pairs of 60 photos are 1770 (~70 s), name-order and look-alike pairs ~12 per photo (~720): the point where
# exhaustive starts to dominate the step while sets this small still profit from every pair.
EXHAUSTIVE_MAX = 60
SEQUENTIAL_OVERLAP = 10  # name-order neighbours matched per image (plus those 2^k further on)
RETRIEVAL_NEIGHBOURS = 5  # most similar-looking images matched per image, for the loops order misses
SPATIAL_NEIGHBOURS = 20  # nearest images by GPS matched per image

Matcher = Literal["auto", "exhaustive", "sequential", "retrieval", "spatial"]
# Incremental mapping stays the default; GLOMAP's global mapper ("global") is offered. Measured: on the 100-photo
# capture of the sample scene (no K.txt, sequential+retrieval pairs, 2 shared cores) global reached 0.43 mm mean
# camera error for 85 s CPU (164 s wall, 2 threads), incremental 0.51 mm for 68 s CPU (359 s wall, 1 thread); but on
# fountain_p11 (11 real photos, exhaustive pairs) global failed outright: 1086 mm mean error against incremental's
# 6.6 mm, with or without principal-point refinement.
Mapper = Literal["incremental", "global"]


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
    matcher_used: str  # "exhaustive", "sequential", "sequential+retrieval" or "spatial+sequential+retrieval"
    pairs_matched: int = 0
    pairs_verified: int = 0
    mapper: str = "incremental"


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


def _has_gps(db: Path, count: int) -> bool:
    database = pycolmap.Database.open(str(db))
    try:
        return database.num_pose_priors() >= count // 2  # import_images reads EXIF GPS into pose priors
    finally:
        database.close()


def _match(db: Path, names: list[str], matcher: Matcher, work: Path, num_threads: int, seed: int) -> str:
    """Match the image pairs ``matcher`` selects; returns the pairing used.

    "auto": every pair up to EXHAUSTIVE_MAX images; above it a number of pairs per image that does not grow with
    the set, so matching time grows linearly: name-order neighbours (phone captures are taken in order) plus the
    most similar-looking images (loop closures), plus the nearest images by GPS when the photos carry it. GPS
    alone is not enough: a phone's fix wanders by metres, as much as a walk around an object."""
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = num_threads
    vo = pycolmap.TwoViewGeometryOptions()
    vo.ransac.random_seed = seed
    device = pycolmap.Device.cpu
    used = []
    if matcher == "auto":
        matcher = "exhaustive" if len(names) <= EXHAUSTIVE_MAX else "retrieval"
        if matcher == "retrieval" and _has_gps(db, len(names)):
            matcher = "spatial"
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=mo, verification_options=vo, device=device)
        return "exhaustive"
    if matcher == "spatial":
        so = pycolmap.SpatialPairingOptions(max_num_neighbors=SPATIAL_NEIGHBOURS)
        pycolmap.match_spatial(db, matching_options=mo, pairing_options=so, verification_options=vo, device=device)
        used.append("spatial")
    pairs = sequential_pairs(names, SEQUENTIAL_OVERLAP)
    used.append("sequential")
    if matcher in ("retrieval", "spatial"):
        pairs |= retrieval_pairs(db, RETRIEVAL_NEIGHBOURS, seed)
        used.append("retrieval")
    # Pairs the spatial pass already matched are skipped: COLMAP matches a pair once per database.
    io = pycolmap.ImportedPairingOptions(match_list_path=str(write_pair_list(pairs, work / "pairs.txt")))
    pycolmap.match_image_pairs(db, matching_options=mo, pairing_options=io, verification_options=vo, device=device)
    return "+".join(used)


def _sfm(image_dir: Path, groups: list[_Group], matcher: Matcher, mapper: Mapper, work: Path, max_image_size: int,
         num_threads: int, seed: int, deterministic: bool
         ) -> tuple[dict[int, pycolmap.Reconstruction], dict[str, float], dict[str, int | str]]:
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
    names = sorted(n for g in groups for n in g.names)
    pairing = _match(db, names, matcher, work, num_threads, seed)
    database = pycolmap.Database.open(str(db))
    try:
        counts = {"pairs_matched": database.num_matched_image_pairs(),
                  "pairs_verified": database.num_verified_image_pairs()}
    finally:
        database.close()
    timings["match_s"] = time.perf_counter() - t
    t = time.perf_counter()
    threads = 1 if deterministic else num_threads
    exact = all(g.exact for g in groups)
    if mapper == "global":
        go = pycolmap.GlobalPipelineOptions()
        go.num_threads, go.random_seed = threads, seed
        go.mapper.num_threads, go.mapper.random_seed = threads, seed
        if exact:
            go.mapper.bundle_adjustment.refine_focal_length = False
            go.mapper.bundle_adjustment.refine_principal_point = True
        recs = pycolmap.global_mapping(db, image_dir, work / "models", options=go)
    else:
        po = pycolmap.IncrementalPipelineOptions()
        po.num_threads, po.random_seed = threads, seed
        # The principal point is often off-centre by tens of pixels; COLMAP keeps it at the centre by default.
        # Refining it: fountain_p11 without K.txt 6.62 -> 3.01 mm mean camera error, same CPU time.
        po.ba_refine_principal_point = True
        # Global bundle adjustment after the model grows by 30% rather than COLMAP's 10%: mapping 21.8 -> 15.3 s on
        # fountain_p11 (3.009 -> 3.018 mm) and 49.4 -> 31.6 s on 100 synthetic captures (0.504 -> 0.508 mm).
        # (ba_global_ignore_redundant_points3D was faster still but raised the error 18%.)
        po.ba_global_frames_ratio = po.ba_global_points_ratio = 1.3
        if exact:  # known intrinsics: keep the focal length, refine the principal point and radial distortion
            po.ba_refine_focal_length, po.ba_refine_extra_params = False, True
        recs = pycolmap.incremental_mapping(db, image_dir, work / "models", options=po)
    timings["map_s"] = time.perf_counter() - t
    return recs, timings, {"pairing": pairing, **counts}


# Peak RSS measured (bench/scale.py, 960x720 synthetic captures): 535 MiB at 30 and 100 views, 806 MiB at 200.
# Sized per job (kai_steps.sizing): `memory` is what a task that does not plan gets.
@step(image="sfm", cpu="2", memory="6Gi", memory_max=MEMORY_MAX["camera_poses"], pool="cpu-optimized",
      timeout="2h")
def camera_poses(images: In[Path], sparse: Out[Path], matcher: Matcher = "auto", mapper: Mapper = "incremental",
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
    if matcher not in ("auto", "exhaustive", "sequential", "retrieval", "spatial"):
        raise PoseEstimationError(f"matcher must be auto, exhaustive, sequential, retrieval or spatial, "
                                  f"got {matcher!r}")
    if mapper not in ("incremental", "global"):
        raise PoseEstimationError(f"mapper must be incremental or global, got {mapper!r}")

    pycolmap.set_random_seed(seed)
    tmp = sparse.with_name(f".{sparse.name}.partial")  # publish the folder whole or not at all
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory(prefix="kai-sfm-") as work:
            recs, timings, pairing = _sfm(image_dir, groups, matcher, mapper, Path(work), max_image_size,
                                          num_threads, seed, deterministic)
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
        unregistered=missing, camera_prior=_prior_kind(groups), matcher_used=str(pairing["pairing"]),
        pairs_matched=int(pairing["pairs_matched"]), pairs_verified=int(pairing["pairs_verified"]), mapper=mapper)
    (tmp / "0").mkdir(parents=True)
    rec.write(tmp / "0")
    report = {**summary.model_dump(), "registered_images": sorted(posed), "models_found": len(recs),
              "cameras": {int(c.camera_id): {"model": c.model_name, "params": list(map(float, c.params))}
                          for c in rec.cameras.values()},
              "options": {"matcher": matcher, "mapper": mapper, "max_image_size": max_image_size,
                          "num_threads": num_threads, "seed": seed, "deterministic": deterministic,
                          "min_registered_fraction": min_registered_fraction}}
    # Durations go to the step's log (and run.json), not into the model folder: same photos, same bytes.
    print("camera_poses timings: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), file=sys.stderr)
    (tmp / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    tmp.rename(sparse)
    return summary
