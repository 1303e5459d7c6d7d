"""Same photos, same parameters, same bytes: two reconstructions of a real photo set, and a run killed mid-way and
resumed, give every output file byte for byte (models, cameras, mesh, quality, report); only the engine's own
records (run.json, logs/) and the steps' times in the report (timings.json, timings.js) differ.

The set is herz_jesus_p8 (8 photos, the smallest real set) at the draft tier: about 25 s a run on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kai_flows.engine.runner import RunResult, run_pipeline
from kai_flows.store import EmbeddedSeaweedFS
from tests.conftest import DATASETS, REPO

TEMPLATE = REPO / "workflow_templates" / "reconstruction.yaml"
PHOTOS = DATASETS / "herz_jesus_p8" / "images"
PARAMS = {"quality_tier": "draft"}
ENGINE_RECORDS = ("run.json", "logs")  # when and how long each step ran, and its log: the engine's, not outputs
STEP_TIMES = ("report/timings.json", "report/timings.js")  # Argo's start and finish of each step, for the report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"real photo set not found at {PHOTOS} (../shared/datasets)"),
]

# The engine in a child process, so that it can be killed like a crashed machine.
# ARGS = template params.json photos out cache; the store comes from KAI_S3_* in the environment.
CHILD = """
import json, sys
from pathlib import Path
from kai_flows.engine.runner import run_pipeline
template, params, photos, out, cache = sys.argv[1:6]
run_pipeline(Path(template), parameters=json.loads(params), inputs={"images": Path(photos)}, out=Path(out),
             cache=Path(cache), progress=False)
"""


def digests(out: Path) -> dict[str, str]:
    """sha256 of every output file by its path under ``out``, the engine's records left out."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] not in ENGINE_RECORDS
        and p.relative_to(out).as_posix() not in STEP_TIMES
    }


def differing(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def reconstruct(server: EmbeddedSeaweedFS, bucket: str, work: Path, **kwargs: str) -> RunResult:
    result = run_pipeline(
        TEMPLATE,
        parameters=PARAMS,
        inputs={"images": PHOTOS},
        out=work / "out",
        store=server.store(bucket),
        cache=work / "cache",
        progress=False,
        **kwargs,
    )
    assert result.phase == "Succeeded", result.message
    return result


@pytest.fixture(scope="module")
def reference(seaweed_server: EmbeddedSeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The output digests of one uninterrupted run."""
    work = tmp_path_factory.mktemp("reference")
    reconstruct(seaweed_server, "repro-reference", work)
    found = digests(work / "out")
    # Every delivered folder is compared, not just whatever happened to be written.
    assert {k.split("/")[0] for k in found} >= {"cameras", "mesh", "models", "quality", "report"}
    assert {"models/model.glb", "models/model.usdz", "cameras/0/points3D.bin", "report/manifest.json",
            "report/index.html", "report/files/model.glb"} <= set(found)
    assert (work / "out" / "report" / "timings.json").is_file()  # the times are there, only not compared
    return found


def test_two_runs_on_the_same_photos_give_byte_identical_outputs(seaweed_server, reference, tmp_path):
    reconstruct(seaweed_server, "repro-second", tmp_path)
    changed = differing(reference, digests(tmp_path / "out"))
    assert not changed, f"{len(changed)} output files differ between two runs: {changed}"


def test_a_run_killed_after_camera_poses_and_resumed_gives_the_same_bytes(seaweed_server, reference, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, **seaweed_server.config("repro-resumed").to_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(TEMPLATE), json.dumps(PARAMS), str(PHOTOS), str(out), str(cache)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        record: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "run.json").is_file():
                record = json.loads((out / "run.json").read_text())  # written atomically
                phases = {n["displayName"]: n["phase"] for n in record["nodes"].values()}
                if phases.get("camera-poses") == "Succeeded":
                    break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert record.get("phase") == "Running" and not (out / "models").exists()

    resumed = run_pipeline(
        TEMPLATE,
        out=out,
        store=seaweed_server.store("repro-resumed"),
        cache=cache,
        resume=record["kai"]["name"],
        progress=False,
    )
    assert resumed.phase == "Succeeded", resumed.message
    assert resumed.node("camera-poses").reused  # the killed run's model is kept, not recomputed
    changed = differing(reference, digests(out))
    assert not changed, f"{len(changed)} output files differ from an uninterrupted run's: {changed}"
