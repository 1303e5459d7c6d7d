"""preprocess on odd inputs: every kind of image becomes upright 8-bit RGB; bad files are named; inputs untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kai_steps.preprocess import PreprocessError, preprocess


def _texture(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8), (w, h))


def _tree_hash(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    rgb = _texture(120, 80)
    cv2.imwrite(str(d / "rgb16.png"), (rgb.astype(np.uint16) * 257)[..., ::-1])  # 48-bit PNG
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(d / "grey16.png")  # I;16
    Image.fromarray(np.dstack([rgb, np.full((80, 120), 128, np.uint8)])).save(d / "alpha.png")
    Image.fromarray(rgb[..., 1]).save(d / "grey.jpg", quality=90)
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg", quality=90)
    Image.fromarray(rgb).save(d / "plain.jpg", quality=90)
    # A portrait photo stored sideways: landscape pixels, EXIF orientation 6 (rotate 90 degrees clockwise).
    side = rgb.copy()
    side[:10, :10] = (255, 0, 0)  # red top-left corner of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(side).save(d / "portrait.jpg", quality=95, exif=exif)
    (d / "truncated.jpg").write_bytes((d / "plain.jpg").read_bytes()[:600])
    (d / "notes.txt").write_text("not a photo\n")
    (d / "plain_copy.jpg").write_bytes((d / "plain.jpg").read_bytes())
    return d


def test_odd_images_become_upright_8bit_rgb(odd_folder: Path, tmp_path: Path) -> None:
    before = _tree_hash(odd_folder)
    out = tmp_path / "out"
    summary = preprocess(odd_folder, out, max_image_size=100)
    assert _tree_hash(odd_folder) == before  # the input folder is never modified

    report = json.loads((out / "preprocess.json").read_text())
    names = {r["source"]: r["name"] for r in report["images"]}
    assert sorted(names) == ["alpha.png", "cmyk.jpg", "grey.jpg", "grey16.png", "plain.jpg", "portrait.jpg",
                             "rgb16.png"]
    assert summary.num_images == 7 and summary.num_skipped == 3
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert skipped["notes.txt"] == "not an image file"
    assert skipped["truncated.jpg"].startswith("cannot decode")
    assert skipped["plain_copy.jpg"] == "duplicate of plain.jpg"
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(names.values())

    for src, name in names.items():
        with Image.open(out / "images" / name) as im:
            assert im.mode == "RGB" and im.format == "JPEG", src
            assert max(im.size) == 100, src  # resized to the working size, aspect kept
            expected = (67, 100) if src == "portrait.jpg" else (100, 67)
            assert im.size == expected, src
    # 16-bit input keeps its brightness when brought down to 8 bits.
    rgb16 = np.asarray(Image.open(out / "images" / names["rgb16.png"]), dtype=float)
    plain = np.asarray(Image.open(out / "images" / names["plain.jpg"]), dtype=float)
    assert abs(rgb16.mean() - plain.mean()) < 4
    # The red corner stored top-left is top-right once the portrait is upright.
    portrait = np.asarray(Image.open(out / "images" / names["portrait.jpg"]))
    assert portrait[2:6, -6:-2, 0].mean() > 200 and portrait[2:6, -6:-2, 1:].mean() < 60


def test_originals_kept_byte_for_byte_when_nothing_changes(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_texture(64, 48, i)).save(src / f"{i}.jpg", quality=90)
    preprocess(src, tmp_path / "out", max_image_size=64)
    for i in range(3):
        assert (tmp_path / "out" / "images" / f"{i}.jpg").read_bytes() == (src / f"{i}.jpg").read_bytes()


def test_k_txt_becomes_a_scaled_exact_prior(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_texture(400, 300, i)).save(src / f"{i}.jpg")
    (src / "K.txt").write_text("500 0 205\n0 502 148\n0 0 1\n")
    summary = preprocess(src, tmp_path / "out", max_image_size=200)
    prior = json.loads((tmp_path / "out" / "camera_prior.json").read_text())
    assert summary.prior == "K.txt" and prior["source"] == "K.txt"
    p = prior["images"]["1.jpg"]
    assert p["exact"] and (p["width"], p["height"]) == (200, 150)
    assert p["fx"] == pytest.approx(250) and p["fy"] == pytest.approx(251)
    assert p["cx"] == pytest.approx(102.5) and p["cy"] == pytest.approx(74)


def test_exif_focal_length_becomes_an_approximate_prior(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x920A] = 4.2  # FocalLength, mm
    ifd[0xA405] = 28  # FocalLengthIn35mmFilm
    for i in range(3):
        Image.fromarray(_texture(400, 300, i)).save(src / f"{i}.jpg", exif=exif)
    preprocess(src, tmp_path / "out", max_image_size=200)
    p = json.loads((tmp_path / "out" / "camera_prior.json").read_text())["images"]["0.jpg"]
    assert p["source"] == "exif-35mm" and not p["exact"]
    assert p["fx"] == pytest.approx(28 * 250 / 43.27, rel=1e-3)  # diagonal of 200x150 is 250 px


def test_enhance_stretches_a_dull_image(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        dull = 100 + (_texture(160, 120, i).astype(np.int16) - 128) // 12
        Image.fromarray(dull.astype(np.uint8)).save(src / f"{i}.png")
    preprocess(src, tmp_path / "plain", max_image_size=160)
    preprocess(src, tmp_path / "enhanced", max_image_size=160, enhance=True)
    plain = np.asarray(Image.open(tmp_path / "plain" / "images" / "0.jpg"), dtype=float)
    enhanced = np.asarray(Image.open(tmp_path / "enhanced" / "images" / "0.jpg"), dtype=float)
    assert enhanced.std() > 1.5 * plain.std()


def test_too_few_usable_images_is_a_clear_error(odd_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "few"
    src.mkdir()
    for name in ("plain.jpg", "grey.jpg", "truncated.jpg", "notes.txt"):
        (src / name).write_bytes((odd_folder / name).read_bytes())
    with pytest.raises(PreprocessError, match=r"only 2 usable images .*notes.txt: not an image file; "
                                              r"truncated.jpg: cannot decode"):
        preprocess(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no half-written output left behind


@pytest.mark.parametrize("count", [0, 1, 2])
def test_zero_one_or_two_images(tmp_path: Path, count: int) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(count):
        Image.fromarray(_texture(64, 48, i)).save(src / f"{i}.jpg")
    with pytest.raises(PreprocessError, match=f"only {count} usable images"):
        preprocess(src, tmp_path / "out")


def test_missing_input_folder(tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="does not exist"):
        preprocess(tmp_path / "nowhere", tmp_path / "out")
