"""The radiance field's held-out views, for the report: each photo the field was not trained on beside the field's
render of it, with its PSNR and SSIM, so a person sees what the scores mean.

Reads the renders the radiance-field step writes (``field/held_out/<stem>.png``), their scores beside them
(``held_out/scores.json``) and, for the photo side, the photos themselves (resized to the render's
size). Written under ``held_out/`` by row number, so a photo's name never becomes a path in the report.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

FOLDER = "held_out"


@dataclass
class HeldOut:
    rows: list[dict[str, Any]]  # name, psnr, ssim, render (report path), photo (report path or "")
    files: dict[str, bytes]  # report-relative path -> PNG/JPEG bytes
    psnr: float | None
    baseline_psnr: float | None


def _photo_like(photo: Path, size: tuple[int, int]) -> bytes:
    with Image.open(photo) as im:
        im = ImageOps.exif_transpose(im).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def held_out_views(renders: Path | None, images: Path | None, notes: list[str]) -> HeldOut | None:
    """The section's content, or None when no held-out render was passed."""
    if renders is None or not Path(renders).is_dir():
        return None
    try:
        field = json.loads((Path(renders) / "scores.json").read_text())
    except (OSError, ValueError):
        notes.append("the held-out views come without their scores (no readable held_out/scores.json)")
        field = {}
    field = field if isinstance(field, dict) else {}
    scores = {Path(str(v.get("name"))).stem: v for v in field.get("views") or [] if isinstance(v, dict)}
    photos = {p.stem: p for p in Path(images).rglob("*") if p.is_file()} if images and Path(images).is_dir() else {}
    rows: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for i, render in enumerate(sorted(Path(renders).glob("*.png"))):
        score = scores.get(render.stem, {})
        row = {"name": str(score.get("name", render.stem)), "psnr": score.get("psnr"), "ssim": score.get("ssim"),
               "render": f"{FOLDER}/{i:03d}-field.png", "photo": ""}
        files[row["render"]] = render.read_bytes()
        if render.stem in photos:
            try:
                with Image.open(render) as im:
                    size = im.size
                row["photo"] = f"{FOLDER}/{i:03d}-photo.jpg"
                files[row["photo"]] = _photo_like(photos[render.stem], size)
            except (OSError, UnidentifiedImageError) as exc:
                notes.append(f"held-out photo {photos[render.stem].name} could not be read: {exc}")
        rows.append(row)
    if not rows:
        return None
    return HeldOut(rows, files, field.get("psnr"), field.get("baseline_psnr"))


def held_out_html(h: HeldOut) -> str:
    def fig(path: str, caption: str) -> str:
        return (f"<figure><img src='{html.escape(path)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>") if path else ""

    def score(row: dict[str, Any]) -> str:
        parts = [f"PSNR {row['psnr']:.2f} dB" if isinstance(row["psnr"], int | float) else "",
                 f"SSIM {row['ssim']:.3f}" if isinstance(row["ssim"], int | float) else ""]
        return ", ".join(p for p in parts if p)

    overall = ""
    if isinstance(h.psnr, int | float) and isinstance(h.baseline_psnr, int | float):
        overall = (f" Over every held-out pixel: PSNR {h.psnr:.2f} dB, against {h.baseline_psnr:.2f} dB for a "
                   "constant colour.")
    out = ["<h2>Held-out views</h2><p>Photos the radiance field was not trained on, beside its render from the same "
           f"camera.{html.escape(overall)}</p><div class='held-out'>"]
    for row in h.rows:
        out.append(f"<div class='pair'><h3>{html.escape(row['name'])}: {html.escape(score(row))}</h3>"
                   + fig(row["photo"], "photo") + fig(row["render"], "radiance field") + "</div>")
    out.append("</div>")
    return "".join(out)
