"""Every image a compiled template references has a Dockerfile, and every Dockerfile's entry module exists."""

import importlib.util
import re
from pathlib import Path

import yaml

from kai_flows.compile import render_all

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"


def _dockerfiles() -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in IMAGES.glob("*/Dockerfile")}


def test_every_referenced_image_has_a_dockerfile():
    referenced = set()
    for rel, text in render_all().items():
        if not rel.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            for t in (doc.get("spec") or {}).get("templates", []):
                if "container" in t:
                    match = re.fullmatch(r"registry\.example\.com/kai/([a-z0-9-]+):latest", t["container"]["image"])
                    assert match, f"{rel}: template {t['name']}: image {t['container']['image']}"
                    referenced.add(match.group(1))
    assert referenced, "no container templates compiled"
    missing = referenced - set(_dockerfiles())
    assert not missing, f"images without images/<name>/Dockerfile: {sorted(missing)}"


def test_every_dockerfile_names_an_existing_entry_module_and_runs_as_non_root():
    files = _dockerfiles()
    assert "base" in files
    for name, text in files.items():
        module = re.search(r'LABEL kai-flows.entry-module="([\w.]+)"', text)
        assert module, f"images/{name}/Dockerfile has no kai-flows.entry-module label"
        assert importlib.util.find_spec(module.group(1)) is not None, f"images/{name}: no module {module.group(1)}"
        assert "USER 1000:1000" in text, f"images/{name}/Dockerfile does not drop to the non-root user"
        if name != "base":
            assert re.search(r"^FROM \$\{BASE\}$", text, re.M), f"images/{name} does not build on the base image"
