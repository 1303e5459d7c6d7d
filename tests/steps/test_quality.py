"""The quality steps on images made here with known defects, and on a real photo set."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kai_steps.quality import aggregate_quality, assess_image, candidate_pairs, list_images
from tests.conftest import DATASETS


def _scene(seed: int, shift: int = 0) -> np.ndarray:
    """A textured 'photo': random blocks and lines, so blur and features are measurable."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img = cv2.resize(base, (1024, 768), interpolation=cv2.INTER_NEAREST)
    for _ in range(60):
        p1, p2 = rng.integers(0, 1024, 2), rng.integers(0, 768, 2)
        cv2.line(img, (int(p1[0]), int(p2[0])), (int(p1[1]), int(p2[1])), rng.integers(0, 255, 3).tolist(), 3)
    return np.roll(img, shift, axis=1)


def _save(folder: Path, name: str, arr: np.ndarray, **kw) -> None:
    Image.fromarray(arr).save(folder / name, **kw)


@pytest.fixture
def photo_set(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    scene = _scene(1)
    for i in range(4):  # overlapping views of one scene
        _save(folder, f"view{i}.jpg", np.roll(scene, 40 * i, axis=1), quality=95)
    _save(folder, "blurry.jpg", cv2.GaussianBlur(scene, (0, 0), 8), quality=95)
    _save(folder, "dark.jpg", (scene * 0.08).astype(np.uint8), quality=95)
    _save(folder, "copy.jpg", np.roll(scene, 1, axis=1), quality=90)
    (folder / "broken.jpg").write_bytes((folder / "view0.jpg").read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_listing_ignores_non_images(photo_set):
    listing = list_images(photo_set)
    assert "notes.txt" in listing.ignored and "broken.jpg" in listing.names
    assert listing.count == 8 and listing.names == sorted(listing.names)


def test_defects_are_measured(photo_set):
    sharp = assess_image(photo_set / "view0.jpg", "view0.jpg")
    blurry = assess_image(photo_set / "blurry.jpg", "blurry.jpg")
    dark = assess_image(photo_set / "dark.jpg", "dark.jpg")
    broken = assess_image(photo_set / "broken.jpg", "broken.jpg")
    assert sharp.decodable and sharp.width == 1024 and sharp.height == 768
    assert blurry.sharpness < sharp.sharpness / 10
    assert dark.brightness < 25 and dark.underexposed > sharp.underexposed
    assert not broken.decodable and broken.error


def test_verdict_leaves_out_defects_and_asks_for_enhancement(photo_set, tmp_path):
    before = {p.name: p.read_bytes() for p in photo_set.iterdir()}
    names = list_images(photo_set).names
    scores = [assess_image(photo_set / n, n) for n in names]
    verdict = aggregate_quality(photo_set, scores, tmp_path / "report")
    text = " ".join(verdict.reasons)
    assert "undecodable: broken.jpg" in text and "blurry: blurry.jpg" in text
    assert "duplicate: view0.jpg" in text or "duplicate: copy.jpg" in text
    assert "poorly exposed: dark.jpg" in text
    assert verdict.verdict == "enhance" and verdict.total == 8
    report = json.loads((tmp_path / "report" / "quality.json").read_text())
    assert report["verdict"] == "enhance" and len(report["images"]) == 8
    assert Image.open(tmp_path / "report" / "contact_sheet.png").size[0] > 0
    assert {p.name: p.read_bytes() for p in photo_set.iterdir()} == before, "input folder modified"


def test_too_few_usable_images_is_a_rejection(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    _save(folder, "a.jpg", _scene(2))
    _save(folder, "b.jpg", cv2.GaussianBlur(_scene(3), (0, 0), 8))
    scores = [assess_image(folder / n, n) for n in list_images(folder).names]
    verdict = aggregate_quality(folder, scores, tmp_path / "report")
    assert verdict.verdict == "reject"
    assert verdict.reasons[0] == "only 1 usable image(s) of 2; at least 3 are needed"


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        list_images(tmp_path)


@pytest.mark.skipif(not (DATASETS / "fountain_p11").is_dir(), reason="../shared/datasets is not beside the checkout")
def test_real_photo_set_proceeds(tmp_path):
    folder = DATASETS / "fountain_p11" / "images"
    names = list_images(folder).names
    scores = [assess_image(folder / n, n) for n in names]
    assert all(s.decodable and s.width == 3072 for s in scores)
    verdict = aggregate_quality(folder, scores, tmp_path / "report")
    assert verdict.verdict == "proceed" and verdict.usable == 11


def test_large_sets_match_linearly_many_pairs_and_still_find_the_isolated_photo(photo_set, tmp_path):
    # A sharp photo of nothing the others show (a fine checkerboard: its corners all look alike, so no ORB match
    # passes the ratio test): isolated whether every pair is matched or only neighbours.
    yy, xx = np.indices((768, 1024))
    board = ((yy // 12 + xx // 12) % 2 * 255).astype(np.uint8)
    _save(photo_set, "elsewhere.jpg", np.dstack([board] * 3), quality=95)
    names = list_images(photo_set).names
    scores = [assess_image(photo_set / n, n) for n in names]
    every = aggregate_quality(photo_set, scores, tmp_path / "every")
    linear = aggregate_quality(photo_set, scores, tmp_path / "linear", exhaustive_below=2)
    assert linear == every and "isolated" in " ".join(linear.reasons) and "elsewhere.jpg" in " ".join(linear.reasons)
    matched = json.loads((tmp_path / "linear" / "quality.json").read_text())["pairs_matched"]
    assert matched <= json.loads((tmp_path / "every" / "quality.json").read_text())["pairs_matched"]
    # 300 photos: at most 3 + 8 partners each, not 300 * 299 / 2 pairs.
    rng = np.random.default_rng(0)
    thumbs = {f"{i:03d}.jpg": v / np.linalg.norm(v) for i, v in enumerate(rng.normal(size=(300, 768)))}
    pairs = candidate_pairs(sorted(thumbs), thumbs, exhaustive_below=60)
    assert len(pairs) <= 300 * 11 and len(set(pairs)) == len(pairs)
    assert ("000.jpg", "001.jpg") in pairs and all(a < b for a, b in pairs)
