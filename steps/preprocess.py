"""Image preprocessing: every usable photo becomes an upright 8-bit RGB JPEG at the working size.

The input folder is only read. Files that are not images, cannot be decoded or repeat an earlier file byte for
byte are skipped and named in ``preprocess.json``. Intrinsics travel forward as ``camera_prior.json`` (scaled to
the working size): exact ones from a ``K.txt`` beside the photos, approximate ones from EXIF focal length and
sensor resolution or the 35 mm equivalent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import lazy_loader as lazy
from PIL import Image
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._imageio import IMAGE_SUFFIXES, Decoded, ImageDecodeError, decode
from kai_steps._photos import walk_files

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
cv2 = lazy.load("cv2")
np = lazy.load("numpy")

MIN_IMAGES = 3


class PreprocessError(ValueError):
    """The input cannot be preprocessed (one-line message naming the cause)."""


class PreprocessSummary(BaseModel):
    num_images: int
    num_skipped: int
    skipped: list[str]  # "name: reason"
    prior: str  # "K.txt", "exif-sensor", "exif-35mm", "mixed" or "none"
    width: int  # largest working width / height among the outputs
    height: int


def _read_k(path: Path) -> np.ndarray:
    try:
        K = np.array(path.read_text().split(), dtype=float)
    except ValueError:
        raise PreprocessError(f"{path.name}: not a 3x3 matrix of numbers") from None
    if K.size != 9 or K[0] <= 0 or K[4] <= 0:
        raise PreprocessError(f"{path.name}: expected a 3x3 intrinsic matrix with positive focal lengths")
    return K.reshape(3, 3)


def _clahe(im: Image.Image) -> Image.Image:
    """Contrast-limited equalisation of lightness only, so colours do not shift."""
    lab = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def _out_name(src: Path, used: set[str]) -> str:
    name = src.name if src.suffix.lower() in (".jpg", ".jpeg") else f"{src.stem}.jpg"
    if name in used:
        name = f"{src.stem}-{src.suffix.lstrip('.').lower()}.jpg"
    k = 1
    while name in used:
        name, k = f"{src.stem}-{k}.jpg", k + 1
    used.add(name)
    return name


def _prior_for(r: dict, K: np.ndarray | None, k_size: tuple[int, int] | None) -> dict | None:
    """Intrinsics at the working size: K.txt for images of the size it was made for, else EXIF, else none."""
    (w, h), (ow, oh) = r["size"], r["upright_size"]
    sx, sy = w / ow, h / oh
    if K is not None and not r["rotated"] and tuple(r["original_size"]) == k_size:
        # Continuous pixel coordinates (COLMAP's convention): a resize scales them directly.
        return {"fx": K[0, 0] * sx, "fy": K[1, 1] * sy, "cx": K[0, 2] * sx, "cy": K[1, 2] * sy,
                "width": w, "height": h, "source": "K.txt", "exact": True}
    if r["focal_px"] is not None:
        return {"fx": r["focal_px"] * sx, "fy": r["focal_px"] * sy, "cx": w / 2, "cy": h / 2,
                "width": w, "height": h, "source": r["focal_source"], "exact": False}
    return None


def _write(src: Path, d: Decoded, dest: Path, max_image_size: int, enhance: bool) -> dict:
    """Resize/enhance/save one decoded image; returns its record for preprocess.json."""
    w, h = d.image.size
    s = min(1.0, max_image_size / max(w, h))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    untouched = (size == (w, h) and not enhance and not d.rotated and d.original_mode == "RGB"
                 and src.suffix.lower() in (".jpg", ".jpeg"))
    if untouched:
        shutil.copyfile(src, dest)  # no re-encode: keep the original bytes
    else:
        # Antialiased bilinear, as COLMAP downscales internally, and near-lossless JPEG: Lanczos ringing and q95
        # artefacts shift SIFT keypoints (herz_jesus_p8 camera error 4.45 mm with them, 3.51 mm without; bench/).
        im = d.image if size == (w, h) else d.image.resize(size, Image.Resampling.BILINEAR)
        (_clahe(im) if enhance else im).save(dest, quality=100, subsampling=0)
    return {"source": src.name, "name": dest.name, "original_size": list(d.original_size), "upright_size": [w, h],
            "size": list(size), "mode": d.original_mode, "rotated": d.rotated, "camera": d.camera,
            "focal_px": d.focal_px, "focal_source": d.focal_source, "copied": untouched}


@step(image="imaging", cpu="2", memory="2Gi", timeout="20m")
def preprocess(images: In[Path], out: Out[Path], max_image_size: int = 1600,
               enhance: bool = False) -> PreprocessSummary:
    """Decode, upright, convert and resize every photo in ``images`` into ``out/images``."""
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise PreprocessError(f"input image folder {images} does not exist or is not a folder")
    if max_image_size < 16:
        raise PreprocessError(f"max_image_size must be at least 16 pixels, got {max_image_size}")
    if out.exists():
        raise PreprocessError(f"output folder already exists: {out}")
    tmp = out.with_name(f".{out.name}.partial")  # publish the folder whole or not at all
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        summary = _run(images, tmp, max_image_size, enhance)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out)
    return summary


def _run(images: Path, tmp: Path, max_image_size: int, enhance: bool) -> PreprocessSummary:
    files = walk_files(images)  # subfolders too, as list_images finds them
    k_file = next((p for p in files if p.name.lower() == "k.txt"), None)
    skipped: list[tuple[str, str]] = []
    K = None
    if k_file is not None:
        try:
            K = _read_k(k_file)
        except PreprocessError as exc:
            skipped.append((k_file.name, str(exc).split(": ", 1)[1]))

    records: list[dict] = []
    seen: dict[str, str] = {}
    used: set[str] = set()
    for p in files:  # one image in memory at a time
        if p == k_file:
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((p.name, "not an image file"))
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in seen:
            skipped.append((p.name, f"duplicate of {seen[digest]}"))
            continue
        try:
            d = decode(p)
        except ImageDecodeError as exc:
            skipped.append((p.name, f"cannot decode: {exc}"))
            continue
        seen[digest] = p.name
        records.append(_write(p, d, tmp / "images" / _out_name(p, used), max_image_size, enhance))
    if len(records) < MIN_IMAGES:
        why = "; ".join(f"{n}: {r}" for n, r in skipped) or "no other files"
        raise PreprocessError(f"only {len(records)} usable images in {images} (need at least {MIN_IMAGES}); "
                              f"skipped: {why}")

    # K.txt describes the camera of the most common image size (datasets give one K for one camera).
    common = Counter(tuple(r["original_size"]) for r in records if not r["rotated"]).most_common(1)
    k_size = common[0][0] if common and K is not None else None
    priors = {r["name"]: p for r in records if (p := _prior_for(r, K, k_size)) is not None}

    sources = {p["source"] for p in priors.values()}
    prior_kind = "none" if not sources else sources.pop() if len(sources) == 1 else "mixed"
    (tmp / "camera_prior.json").write_text(json.dumps({"source": prior_kind, "images": priors}, indent=2) + "\n")
    summary = PreprocessSummary(
        num_images=len(records), num_skipped=len(skipped), skipped=[f"{n}: {r}" for n, r in skipped],
        prior=prior_kind, width=max(r["size"][0] for r in records), height=max(r["size"][1] for r in records))
    report = {"max_image_size": max_image_size, "enhance": enhance, "images": records,
              "skipped": [{"name": n, "reason": r} for n, r in skipped], "summary": summary.model_dump()}
    (tmp / "preprocess.json").write_text(json.dumps(report, indent=2) + "\n")
    return summary
