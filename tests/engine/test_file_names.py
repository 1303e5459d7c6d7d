"""File names are data: any name the filesystem allows either works through a real image-quality run or is
refused by name (the photos are never touched)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kai_flows.engine import run_pipeline
from kai_flows.engine.runner import RunRequestError
from tests.conftest import DATASETS

DATASET = DATASETS / "herz_jesus_p8" / "images"


def photos(folder: Path, names: list[str]) -> Path:
    """Real photos of one scene, saved under the given (relative) names."""
    sources = sorted(DATASET.glob("*.jpg"))
    for src, name in zip(sources, names, strict=False):
        dest = folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return folder


def run(tmp_path: Path, folder: Path, store):
    return run_pipeline("image-quality", inputs={"images": folder}, parameters={"min_images": "3"},
                        out=tmp_path / "out", cache=tmp_path / "cache", store=store, progress=False)


def test_photos_in_subfolders_are_found(tmp_path, store):
    folder = photos(tmp_path / "in", ["a.jpg", "b.jpg", "DCIM/100APPLE/c.jpg", "DCIM/100APPLE/d.jpg",
                                      "e<f>&g é.jpg"])
    result = run(tmp_path, folder, store)
    assert result.phase == "Succeeded", result.message
    fanned = sorted(n.display_name for n in result.nodes.values()
                    if n.display_name.startswith("assess-image(") and n.type == "Retry")
    assert fanned == ["assess-image(0:DCIM/100APPLE/c.jpg)", "assess-image(1:DCIM/100APPLE/d.jpg)",
                      "assess-image(2:a.jpg)", "assess-image(3:b.jpg)", "assess-image(4:e<f>&g é.jpg)"]
    assert all(n.phase == "Succeeded" for n in result.nodes.values())


def test_names_a_fan_out_would_alter_are_refused_by_name(tmp_path, store):
    folder = photos(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg", 'say "cheese".jpg', "two\nlines.jpg",
                                      "back\\slash.jpg"])
    before = sorted(p.name for p in folder.iterdir())
    result = run(tmp_path, folder, store)
    assert result.phase == "Failed"
    listing = result.node("list-images")
    for shown in ("'say \"cheese\".jpg' (a double quote)", "'two\\nlines.jpg' (a control character",
                  "'back\\\\slash.jpg' (a backslash)"):
        assert shown in listing.message, listing.message
    assert "/tmp/" not in listing.message and "scratch" not in listing.message  # no internal path
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_name_that_is_not_utf8_is_refused_before_anything_runs(tmp_path, store):
    folder = photos(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    bad = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    shutil.copyfile(DATASET / "0000.jpg", bad)
    with pytest.raises(RunRequestError, match=r"input 'images': file name .*caf\\xe9\.jpg is not UTF-8"):
        run(tmp_path, folder, store)
    assert not (tmp_path / "out" / "run.json").exists()
