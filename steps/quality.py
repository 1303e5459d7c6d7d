"""Image quality assessment: is this photo set worth reconstructing?

Three steps, run as a fan-out in the `image-quality` pipeline and at the head of `reconstruction`:
- `list_images` names the image files of a folder (the fan-out's list);
- `assess_image` scores one image: decodable, resolution, sharpness (variance of the Laplacian), exposure
  (clipped-histogram fractions), EXIF orientation and focal length, a perceptual hash;
- `aggregate_quality` finds near-duplicates (perceptual-hash distance) and isolated images (too few ORB feature
  matches with any other image it is matched with: every other image in small sets, its capture-order and most
  similar neighbours in large ones, so the check grows linearly with the set), then gives a verdict, `reject`,
  `enhance` or `proceed`, with reasons, a JSON report and a contact sheet a person can look at.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Literal

import lazy_loader as lazy
from PIL import ExifTags, Image, ImageDraw, ImageOps, UnidentifiedImageError
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._imageio import IMAGE_SUFFIXES
from kai_steps._photos import fan_out_problem, is_photo, walk_files

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
cv2 = lazy.load("cv2")
imagehash = lazy.load("imagehash")
np = lazy.load("numpy")

EXHAUSTIVE_BELOW = 60  # photo sets smaller than this match every pair of images in the isolation check
SEQUENCE_NEIGHBOURS = 3
SIMILAR_NEIGHBOURS = 8
ANALYSIS_SIDE = 1024  # sharpness and exposure are measured at this size so they do not depend on resolution
Image.MAX_IMAGE_PIXELS = 200_000_000  # refuse decompression bombs, allow large real photos

Verdict = Literal["reject", "enhance", "proceed"]


class ImageListing(BaseModel):
    names: list[str]
    count: int
    ignored: list[str]


class ImageScore(BaseModel):
    name: str
    decodable: bool
    error: str = ""
    width: int = 0
    height: int = 0
    sharpness: float = 0.0
    underexposed: float = 0.0  # fraction of pixels at or below 5/255
    overexposed: float = 0.0  # fraction at or above 250/255
    brightness: float = 0.0  # mean luminance, 0-255
    orientation: int = 1  # EXIF orientation tag
    focal_length_mm: float | None = None
    focal_length_35mm: float | None = None
    camera: str = ""
    phash: str = ""


class QualityVerdict(BaseModel):
    verdict: Verdict
    reasons: list[str]
    usable: int
    total: int


@step(image="quality", cpu="250m", memory="256Mi", timeout="5m")
def list_images(images: In[Path]) -> ImageListing:
    """The image files of the folder and its subfolders (as relative paths), sorted; other files are listed as
    ignored. A photo whose name a fan-out cannot carry is refused by name (see steps/_photos.py)."""
    if not images.is_dir():
        raise ValueError("input 'images' is a single file, not a folder of images")
    names, ignored, unpassable = [], [], []
    for path in walk_files(images):
        rel = path.relative_to(images).as_posix()
        if not is_photo(path):
            ignored.append(rel)
        elif (problem := fan_out_problem(rel)) is not None:
            unpassable.append(f"{rel!r} ({problem})")
        else:
            names.append(rel)
    if unpassable:
        raise ValueError(f"{len(unpassable)} photo name(s) that Argo would pass to their step altered: "
                         f"{', '.join(unpassable)}; rename them (no double quotes, backslashes or control characters)")
    if not names:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in input 'images'"
                         + (f"; it holds only {', '.join(ignored[:5])}" if ignored else ""))
    return ImageListing(names=names, count=len(names), ignored=ignored)


def _exif_number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if np.isfinite(number) and number > 0 else None


@step(image="quality", cpu="500m", memory="768Mi", timeout="5m")
def assess_image(image: In[Path], image_name: str = "") -> ImageScore:
    """Score one image file. An undecodable file is a result (decodable=False), not a failure."""
    name = image_name or image.name
    try:
        with Image.open(image) as im:
            exif = im.getexif()
            im.load()
            width, height = im.size
            oriented = ImageOps.exif_transpose(im)
            grey = np.asarray(oriented.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return ImageScore(name=name, decodable=False, error=f"{type(e).__name__}: {e}")
    scale = ANALYSIS_SIDE / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    return ImageScore(
        name=name,
        decodable=True,
        width=width,
        height=height,
        sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        underexposed=float(np.mean(grey <= 5)),
        overexposed=float(np.mean(grey >= 250)),
        brightness=float(grey.mean()),
        orientation=int(exif.get(ExifTags.Base.Orientation, 1) or 1),
        focal_length_mm=_exif_number(sub.get(ExifTags.Base.FocalLength)),
        focal_length_35mm=_exif_number(sub.get(ExifTags.Base.FocalLengthIn35mmFilm)),
        camera=" ".join(str(exif.get(t, "")).strip("\x00 ") for t in (ExifTags.Base.Make, ExifTags.Base.Model)).strip(),
        phash=str(imagehash.phash(Image.fromarray(grey))),
    )


def _orb_features(path: Path, orientation: int) -> tuple[np.ndarray | None, np.ndarray]:
    """ORB descriptors of the image at 640 px, and a 32 x 24 grey thumbnail (zero mean, unit norm) for picking
    which images to match it with."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im.thumbnail((640, 640))
        grey = np.asarray(im.convert("L"))
    _, descriptors = cv2.ORB_create(nfeatures=800).detectAndCompute(grey, None)
    tiny = cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    tiny -= tiny.mean()
    return descriptors, tiny / max(float(np.linalg.norm(tiny)), 1e-6)


def candidate_pairs(names: list[str], thumbs: dict[str, np.ndarray], exhaustive_below: int,
                    neighbours: int = SEQUENCE_NEIGHBOURS, similar: int = SIMILAR_NEIGHBOURS) -> list[tuple[str, str]]:
    """The image pairs to ORB-match: every pair for small sets; for larger ones (a pair costs ~5-10 ms, so 300
    photos would spend minutes on 45k pairs) each image with its next `neighbours` in capture (name) order, as
    phone captures are sequential, and its `similar` most similar thumbnails, which finds the overlaps of an
    unordered set: a number of pairs that grows linearly with the set."""
    if len(names) < exhaustive_below:
        return list(combinations(names, 2))
    pairs = {(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(i + 1 + neighbours,
                                                                                        len(names)))}
    stack = np.stack([thumbs[n] for n in names])
    similarity = stack @ stack.T
    for i, row in enumerate(similarity):
        others = [int(j) for j in np.argsort(-row, kind="stable") if j != i]
        for j in others[:similar]:
            pairs.add((names[min(i, j)], names[max(i, j)]))
    return sorted(pairs)


def _good_matches(a: np.ndarray | None, b: np.ndarray | None) -> int:
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a, b, k=2)
    return sum(1 for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance)


def _contact_sheet(images: Path, scores: list[ImageScore], flags: dict[str, list[str]], out: Path) -> None:
    tile, cols = 200, 6
    rows = max(1, -(-len(scores) // cols))
    sheet = Image.new("RGB", (cols * tile, rows * (tile + 36)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, s in enumerate(scores):
        x, y = (i % cols) * tile, (i // cols) * (tile + 36)
        if s.decodable:
            with Image.open(images / s.name) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((tile - 8, tile - 8))
                sheet.paste(im, (x + 4, y + 4))
        problems = flags.get(s.name, [])
        colour = "#1a7f37" if not problems else "#b42318"
        draw.rectangle([x + 1, y + 1, x + tile - 2, y + tile - 2], outline=colour, width=3)
        draw.text((x + 4, y + tile + 2), s.name[:30], fill="black")
        draw.text((x + 4, y + tile + 16), (", ".join(problems) or f"sharpness {s.sharpness:.0f}")[:34], fill=colour)
    sheet.save(out)


@step(image="quality", cpu="1", memory="1Gi", timeout="10m")
def aggregate_quality(
    images: In[Path],
    scores: list[ImageScore],
    report: Out[Path],
    min_images: int = 3,
    min_side: int = 480,
    min_sharpness: float = 40.0,
    max_clipped: float = 0.25,
    duplicate_distance: int = 4,
    min_matches: int = 8,
    exhaustive_below: int = EXHAUSTIVE_BELOW,
) -> QualityVerdict:
    """Decide whether the set is worth reconstructing, and write `report/quality.json` and a contact sheet."""
    scores = sorted(scores, key=lambda s: s.name)
    flags: dict[str, list[str]] = {s.name: [] for s in scores}
    for s in scores:
        if not s.decodable:
            flags[s.name].append("undecodable")
            continue
        if min(s.width, s.height) < min_side:
            flags[s.name].append(f"small ({s.width}x{s.height})")
        if s.sharpness < min_sharpness:
            flags[s.name].append("blurry")
        if s.underexposed > max_clipped or s.brightness < 40:
            flags[s.name].append("underexposed")
        if s.overexposed > max_clipped or s.brightness > 225:
            flags[s.name].append("overexposed")
    decodable = [s for s in scores if s.decodable]
    for a, b in combinations(decodable, 2):
        if imagehash.hex_to_hash(a.phash) - imagehash.hex_to_hash(b.phash) <= duplicate_distance:
            flags[b.name].append(f"duplicate of {a.name}")
    candidates = [s for s in decodable if not any(f in ("blurry",) or f.startswith(("small", "duplicate"))
                                                  for f in flags[s.name])]
    features = {s.name: _orb_features(images / s.name, s.orientation) for s in candidates}
    best = dict.fromkeys(features, 0)
    pairs = candidate_pairs(list(features), {n: f[1] for n, f in features.items()}, exhaustive_below)
    for a, b in pairs:
        n = _good_matches(features[a][0], features[b][0])
        best[a], best[b] = max(best[a], n), max(best[b], n)
    for name, n in best.items():
        if n < min_matches and len(best) > 1:  # a lone image has nothing to overlap with: the count check speaks
            flags[name].append(f"isolated ({n} matches)")

    usable = [s for s in decodable if not flags[s.name] or all(f.endswith("exposed") for f in flags[s.name])]
    reasons: list[str] = []
    verdict: Verdict = "proceed"
    if len(usable) < min_images:
        verdict = "reject"
        reasons.append(f"only {len(usable)} usable image(s) of {len(scores)}; at least {min_images} are needed")
    for label in ("undecodable", "blurry", "duplicate", "isolated", "small"):
        named = [n for n, fs in flags.items() if any(f.startswith(label) for f in fs)]
        if named:
            reasons.append(f"{label}: {', '.join(named)} (left out)")
    exposure = [n for n, fs in flags.items() if any(f.endswith("exposed") for f in fs)]
    if exposure:
        reasons.append(f"poorly exposed: {', '.join(exposure)} (enhance before reconstruction)")
        if verdict == "proceed":
            verdict = "enhance"
    if not reasons:
        reasons.append(f"all {len(scores)} images usable")

    result = QualityVerdict(verdict=verdict, reasons=reasons, usable=len(usable), total=len(scores))
    report.mkdir(parents=True)
    (report / "quality.json").write_text(json.dumps(
        {**result.model_dump(), "pairs_matched": len(pairs),
         "images": [{**s.model_dump(), "flags": flags[s.name]} for s in scores]},
        indent=2, sort_keys=True))
    _contact_sheet(images, scores, flags, report / "contact_sheet.png")
    return result
