"""The quality gate's verdict on each photo, for the report: a row of scores per photo, and for every photo the gate
flagged (left out, or to be enhanced) a small thumbnail beside the reason, so a person sees what was wrong.

Reads the gate's ``quality.json`` (``aggregate_quality``'s report folder) and, for the thumbnails, the photos
themselves (the pipeline's ``images``). Thumbnails are ``THUMB`` px JPEGs written under ``photos/``, named by the
photo's row, so a photo's name (sub-folders, spaces) never becomes a path in the report.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image, ImageOps, UnidentifiedImageError

THUMB = 160
FOLDER = "photos"


@dataclass
class PhotoScores:
    verdict: str
    reasons: list[str]
    rows: list[dict[str, Any]]  # quality.json's images: scores and flags
    thumbs: dict[str, bytes]  # report-relative path -> JPEG bytes


def _thumbnail(path: Path) -> bytes:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)  # no EXIF, no timestamp: the same photo gives the same bytes
    return buf.getvalue()


def read_scores(quality: Path, images: Path | None, notes: list[str]) -> PhotoScores | None:
    """The gate's per-photo scores, with thumbnails of the flagged photos when ``images`` holds them; None (with a
    note) when ``quality`` holds no readable quality.json."""
    path = Path(quality) / "quality.json" if Path(quality).is_dir() else Path(quality)
    try:
        doc = json.loads(path.read_text())
        rows = [r for r in doc["images"] if isinstance(r, dict) and "name" in r]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"the quality gate's scores could not be read from {path.name}: {exc}")
        return None
    thumbs: dict[str, bytes] = {}
    unreadable = []
    for i, row in enumerate(rows):
        if not row.get("flags") or images is None or not row.get("decodable", True):
            continue
        src = Path(images) / str(row["name"])
        try:
            data = _thumbnail(src)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            unreadable.append(str(row["name"]))
            continue
        thumbs[f"{FOLDER}/{i:04d}.jpg"] = data
        row["thumbnail"] = f"{FOLDER}/{i:04d}.jpg"
    if unreadable:
        notes.append(f"no thumbnail for {len(unreadable)} flagged photo(s) not readable in the images passed: "
                     f"{', '.join(unreadable[:5])}")
    reasons = doc.get("reasons") if isinstance(doc.get("reasons"), list) else []
    return PhotoScores(str(doc.get("verdict", "")), [str(r) for r in reasons], rows, thumbs)


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "&ndash;"


def _num(v: Any, fmt: str = ".0f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "&ndash;"


def scores_html(scores: PhotoScores) -> str:
    """The section: the gate's verdict and reasons, then a table of every photo, flagged ones first."""
    flagged = sum(1 for r in scores.rows if r.get("flags"))
    parts = [f"<h2>Photos</h2><p>The quality gate's verdict: <b>{html.escape(scores.verdict or 'unknown')}</b>; "
             f"{len(scores.rows)} photo(s), {flagged} flagged.</p>"]
    if scores.reasons:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in scores.reasons) + "</ul>")
    cameras = any(r.get("camera") for r in scores.rows)  # a column only when some photo's EXIF names one
    head = ("<tr><th>photo</th><th>verdict</th><th>size (px)</th><th>sharpness</th><th>brightness</th>"
            f"<th>under / over exposed</th>{'<th>camera</th>' if cameras else ''}</tr>")
    body = []
    for row in sorted(scores.rows, key=lambda r: (not r.get("flags"), str(r["name"]))):
        name = html.escape(str(row["name"]))
        flags = [str(f) for f in row.get("flags") or []]
        if not row.get("decodable", True):
            verdict = f"cannot be decoded: {html.escape(str(row.get('error', '')))}"
        else:
            verdict = html.escape("; ".join(flags)) if flags else "ok"
        thumb = row.get("thumbnail")
        cell = (f'<figure class="thumb"><img src="{html.escape(quote(thumb))}" alt="{name}">'
                f"<figcaption>{name}</figcaption></figure>" if thumb else name)
        size = f"{row['width']}&times;{row['height']}" if row.get("width") else "&ndash;"
        body.append(f"<tr{' class=flagged' if flags else ''}><td>{cell}</td><td>{verdict}</td><td>{size}</td>"
                    f"<td>{_num(row.get('sharpness'))}</td><td>{_num(row.get('brightness'))}</td>"
                    f"<td>{_pct(row.get('underexposed'))} / {_pct(row.get('overexposed'))}</td>"
                    + (f"<td>{html.escape(str(row.get('camera') or ''))}</td>" if cameras else "") + "</tr>")
    parts.append(f"<table class='photos'>{head}{''.join(body)}</table><p class='hint'>Sharpness: variance of the "
                 "Laplacian at 1024 px (the gate's threshold is 40 by default); brightness: mean luminance 0-255.</p>")
    return "".join(parts)
