"""Decoding photos into 8-bit RGB and reading the camera facts they carry (EXIF focal length, sensor size)."""

from __future__ import annotations

from dataclasses import dataclass

import lazy_loader as lazy
from PIL import ExifTags, Image, ImageOps

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")

# Pillow opens these without complaint; anything else is "not an image" for us.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # EXIF FocalPlaneResolutionUnit: inch, cm, mm, um


class ImageDecodeError(ValueError):
    """A file that should be an image cannot be decoded (corrupt, truncated, unsupported)."""


def _to_rgb8(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16/32-bit greyscale is scaled, alpha is composited over mid-grey."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255) else 255.0
        if im.mode == "F":
            top = max(float(a.max()), 1e-12)
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGB


@dataclass
class Decoded:
    image: Image.Image  # upright, 8-bit RGB
    original_mode: str
    original_size: tuple[int, int]  # as stored, before the EXIF rotation
    rotated: bool  # EXIF orientation changed the pixel layout
    focal_px: float | None  # from EXIF, at the upright image's full resolution
    focal_source: str | None  # "exif-sensor" or "exif-35mm"
    camera: str  # EXIF make + model, "" when absent


def _exif_focal(exif: Image.Exif, width: int, height: int) -> tuple[float | None, str | None]:
    """Focal length in pixels from EXIF: sensor resolution when given (exact), else the 35 mm equivalent."""
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    f_mm = ifd.get(ExifTags.Base.FocalLength)
    xres = ifd.get(ExifTags.Base.FocalPlaneXResolution)
    unit = _MM_PER_UNIT.get(int(ifd.get(ExifTags.Base.FocalPlaneResolutionUnit, 2)))
    exif_w = ifd.get(ExifTags.Base.ExifImageWidth)
    exif_h = ifd.get(ExifTags.Base.ExifImageHeight)
    try:
        if f_mm and xres and unit and float(f_mm) > 0 and float(xres) > 0:
            px_per_mm = float(xres) / unit
            stored = max(int(exif_w or 0), int(exif_h or 0))
            scale = max(width, height) / stored if stored else 1.0  # the file may be smaller than the sensor read-out
            return float(f_mm) * px_per_mm * scale, "exif-sensor"
        f35 = ifd.get(ExifTags.Base.FocalLengthIn35mmFilm)
        if f35 and float(f35) > 0:
            # 35 mm film diagonal is 43.27 mm; the equivalent focal length is defined on the diagonal.
            return float(f35) * float(np.hypot(width, height)) / 43.27, "exif-35mm"
    except (TypeError, ValueError, ZeroDivisionError):
        pass  # malformed EXIF values: no prior rather than a failure
    return None, None


def decode(path) -> Decoded:
    """Open, fully decode, upright and convert one image. Raises ImageDecodeError with a one-line reason."""
    try:
        with Image.open(path) as im:
            im.load()  # force the full decode: truncated files fail here, not later
            exif = im.getexif()
            mode, size = im.mode, im.size
            upright = ImageOps.exif_transpose(im)
            rgb = _to_rgb8(upright)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageDecodeError(reason) from None
    camera = " ".join(str(exif.get(t, "")).strip("\x00 ") for t in (ExifTags.Base.Make, ExifTags.Base.Model)).strip()
    focal, source = _exif_focal(exif, *rgb.size)
    return Decoded(rgb, mode, size, rgb.size != size or exif.get(ExifTags.Base.Orientation, 1) not in (0, 1),
                   focal, source, camera)
