"""Fixtures the step suites share: the Khronos glTF Validator (node), which the steps cannot run themselves.

The validator is the npm package ``gltf-validator`` at the version pinned in ``gltf_validator/package.json``,
installed into ``~/.cache/kai-flows/npm`` (``KAI_NPM_CACHE`` overrides), outside the repository. ``make
gltf-validator`` installs it (``make test`` does it first); the fixture installs it too when it is missing. Where
npm is absent or the registry cannot be reached, the tests that need it are skipped with the reason, unless
``KAI_REQUIRE_GLTF_VALIDATOR=1`` (set by .ci/run), which makes that a failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

VALIDATOR_SRC = Path(__file__).parent / "gltf_validator"  # package.json (the pinned version) and validate.js
NPM_CACHE = Path(os.environ.get("KAI_NPM_CACHE") or Path.home() / ".cache" / "kai-flows" / "npm")
PINNED = json.loads((VALIDATOR_SRC / "package.json").read_text())["dependencies"]["gltf-validator"]


def _unavailable(reason: str) -> None:
    if os.environ.get("KAI_REQUIRE_GLTF_VALIDATOR") == "1":
        pytest.fail(f"the Khronos glTF Validator is required (KAI_REQUIRE_GLTF_VALIDATOR=1): {reason}")
    pytest.skip(f"Khronos glTF Validator unavailable: {reason}")


def _installed_version(module: Path) -> str | None:
    try:
        return json.loads((module / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _install() -> Path:
    """The path of the installed ``gltf-validator`` module, installing the pinned version when needed."""
    module = NPM_CACHE / "node_modules" / "gltf-validator"
    if shutil.which("node") is None:
        _unavailable("node is not installed (Debian: apt-get install nodejs npm)")
    if _installed_version(module) == PINNED:
        return module
    if shutil.which("npm") is None:
        _unavailable(f"npm is not installed and {module} does not hold gltf-validator {PINNED} "
                     "(Debian: apt-get install nodejs npm; then make gltf-validator)")
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    with open(NPM_CACHE / ".install.lock", "w") as lock:  # pytest-xdist workers install once, one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(module) != PINNED:
            shutil.copyfile(VALIDATOR_SRC / "package.json", NPM_CACHE / "package.json")
            try:
                run = subprocess.run(["npm", "install", "--prefix", str(NPM_CACHE), "--no-audit", "--no-fund"],
                                     capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                _unavailable(f"npm install gltf-validator@{PINNED} took over 300 s (registry unreachable?)")
            if run.returncode != 0 or _installed_version(module) != PINNED:
                last = (run.stderr.strip().splitlines() or ["no output"])[-1]
                _unavailable(f"npm install gltf-validator@{PINNED} into {NPM_CACHE} failed: {last}")
    return module


@pytest.fixture(scope="session")
def gltf_validator() -> Callable[..., dict[str, dict]]:
    """``gltf_validator(*paths)``: validate glb/gltf files; fails the test with one line per file that has errors
    (code, JSON pointer, message); returns each file's report (the validator's JSON) by the path given."""
    module = _install()

    def validate(*paths: Path) -> dict[str, dict]:
        run = subprocess.run(["node", str(VALIDATOR_SRC / "validate.js"), str(module), *map(str, paths)],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"glTF Validator did not run: {run.stderr.strip()}"
        reports = json.loads(run.stdout)
        failures = []
        for path, report in reports.items():
            issues = report["issues"]
            if issues["numErrors"]:
                errors = [f"{m['code']} at {m.get('pointer', '?')}: {m['message']}"
                          for m in issues["messages"] if m["severity"] == 0]
                name = "/".join(Path(path).parts[-2:])  # folder and file: several steps write model.glb
                failures.append(f"{name}: {issues['numErrors']} glTF Validator error(s): {'; '.join(errors[:5])}")
        assert not failures, "\n".join(failures)
        return reports

    return validate
