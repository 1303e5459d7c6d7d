"""kai-flows as a user installs it: the built wheel in a fresh virtualenv, used from another folder.

The fresh venv gets kai-flows only from the wheel; its third-party dependencies come from the project's venv through
a .pth line (installing torch, Open3D and pycolmap again would take minutes and the network), which adds that
folder to sys.path without running its .pth files, so the checkout's editable install stays out of reach.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from tests.conftest import DATASETS, REPO

DATASET = DATASETS / "herz_jesus_p8" / "images"


def test_the_package_list_names_every_package():
    """pyproject.toml lists packages explicitly (it maps steps/, workflow_templates/, ... into the wheel): a new
    subpackage of kai_flows must be listed, or the wheel would silently lack it."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"kai_flows", *(f"kai_flows.{p}" for p in find_packages(str(REPO / "kai_flows")))}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_wheel_installs_and_works_from_another_folder(tmp_path, seaweed_server):
    if not DATASET.is_dir():
        pytest.skip(f"no photo set at {DATASET}")
    wheels = tmp_path / "wheels"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                 str(REPO)], cwd=tmp_path, env=dict(os.environ))
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = wheels.glob("kai_flows-*.whl")

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=dict(os.environ)).returncode == 0
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path,
                    env=dict(os.environ)).stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], cwd=tmp_path,
                    env=dict(os.environ))
    assert installed.returncode == 0, installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"  # no workflow_templates/, migrations/ or steps/ here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KAI_TEMPLATES_DIR", "KAI_MIGRATIONS_DIR")}
    env.update(seaweed_server.config("kai-wheel").to_env(), KAI_CACHE_DIR=str(tmp_path / "cache"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = run([str(py), "-c", "import kai_flows, kai_steps, importlib.util as u; print(kai_flows.__file__);"
                 " print(kai_steps.__file__); print(u.find_spec('steps'))"], cwd=elsewhere, env=env)
    lines = where.stdout.split()
    assert lines[0].startswith(str(site)) and lines[1].startswith(str(site)), where.stdout + where.stderr
    assert lines[2] == "None"  # no top-level `steps` package to collide with another project's

    cli = str(venv / "bin" / "kai-flows")
    listed = run([cli, "pipelines"], cwd=elsewhere, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "image-quality" in listed.stdout and "reconstruction" in listed.stdout

    ran = run([cli, "run", "image-quality", "--input", f"images={DATASET}", "--out", str(tmp_path / "out"),
               "--quiet"], cwd=elsewhere, env=env)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert (tmp_path / "out" / "report" / "quality.json").is_file()

    linted = run([cli, "lint"], cwd=elsewhere, env=env)  # the shipped templates, against the shipped Dockerfiles
    assert linted.returncode == 0 and linted.stdout.startswith("OK:"), linted.stdout[-2000:] + linted.stderr[-2000:]
    deploy = run([cli, "deploy", "--dry-run"], cwd=elsewhere, env=env)
    assert deploy.returncode == 0 and "nothing applied (--dry-run)" in deploy.stdout, deploy.stdout + deploy.stderr

    status = run([cli, "migrate", "--status", "--database-url", "postgresql://postgres@127.0.0.1:5432/test"],
                 cwd=elsewhere, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "001_job_ledger.sql" in status.stdout and "003_job_tenant.sql" in status.stdout
