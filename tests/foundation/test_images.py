"""Every image a compiled template references has a Dockerfile, and every Dockerfile's entry module exists."""

import importlib.util
import re

import yaml

from kai_flows.compile import render_all
from kai_flows.images import families
from kai_flows.policy import DEFAULT_TAG
from tests.conftest import REPO

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
                    match = re.fullmatch(rf"registry\.example\.com/kai/([a-z0-9-]+):{re.escape(DEFAULT_TAG)}",
                                         t["container"]["image"])
                    assert match, f"{rel}: template {t['name']}: image {t['container']['image']}"
                    referenced.add(match.group(1))
    assert referenced, "no container templates compiled"
    missing = referenced - set(_dockerfiles())
    assert not missing, f"images without images/<name>/Dockerfile: {sorted(missing)}"


def test_every_family_runs_as_non_root_and_builds_on_a_family_below():
    fams = families(REPO)
    assert next(iter(fams)) == "base" and fams["base"].parent is None
    for name, fam in fams.items():
        text = fam.dockerfile.read_text()
        users = re.findall(r"^USER (\S+)$", text, re.M)
        assert name != "base" or users, "images/base/Dockerfile sets no USER"
        assert not users or users[-1] == "1000:1000", f"images/{name}/Dockerfile ends as user {users[-1]}"
        if name != "base":
            assert fam.parent in fams and re.search(r"^FROM \$\{BASE\}$", text, re.M), name
            assert list(fams).index(fam.parent) < list(fams).index(name), f"{name} builds before its parent"


def test_every_referenced_family_names_an_existing_entry_module():
    for name, fam in families(REPO).items():
        module = re.search(r'LABEL kai-flows.entry-module="([\w.]+)"', fam.dockerfile.read_text())
        if module:
            assert importlib.util.find_spec(module.group(1)) is not None, f"images/{name}: no {module.group(1)}"
    assert {n for n, f in families(REPO).items() if "entry-module" in f.dockerfile.read_text()} >= {
        "quality", "imaging", "sfm", "geometry", "nerf", "export"}


def test_a_dry_run_prints_each_build_in_parent_order_with_labels_and_the_parent_as_base():
    from typer.testing import CliRunner

    from kai_flows.cli import app

    result = CliRunner().invoke(app, ["images", "build", "--dry-run", "--registry", "reg.example/ml", "--tag",
                                      "v1", "--engine", "docker", "--context", str(REPO), "--push"])
    assert result.exit_code == 0, result.output
    builds = [ln for ln in result.output.splitlines() if " build " in ln]
    tags = [re.search(r"-t (\S+)", ln).group(1) for ln in builds]
    assert tags[0] == "reg.example/ml/kai/base:v1"
    assert set(tags) == {f"reg.example/ml/kai/{f}:v1" for f in families(REPO)}
    geometry = next(ln for ln in builds if "kai/geometry:v1" in ln)
    assert "--build-arg BASE=reg.example/ml/kai/sfm:v1" in geometry
    assert "org.opencontainers.image.revision=" in geometry and "org.opencontainers.image.version=" in geometry
    assert tags.index("reg.example/ml/kai/sfm:v1") < tags.index("reg.example/ml/kai/geometry:v1")
    assert sum(" push reg.example/ml/kai/" in ln for ln in result.output.splitlines()) == len(tags)


def test_an_unknown_family_is_named():
    from typer.testing import CliRunner

    from kai_flows.cli import app

    result = CliRunner().invoke(app, ["images", "build", "--dry-run", "--only", "mesher", "--context", str(REPO)])
    assert result.exit_code == 2
    assert "unknown image family mesher" in result.output and "geometry" in result.output
