"""Infrastructure faults during a run, caused for real: the store's process SIGKILLed mid-step, an external S3
endpoint that dies, a full disk under --out. The step is never retried for them, and run.json always ends in a
final phase with a message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from kai_flows.engine import RunResult, run_pipeline, store_guard
from kai_flows.store import EmbeddedSeaweedFS
from tests.engine.test_interrupt import wait_for
from tests.engine.wf import container, dag, workflow

# The step announces it runs, waits for the test's go, then writes SIZE bytes as its output artifact.
HOLD = """import pathlib, sys, time
started, go, out = (pathlib.Path(a) for a in sys.argv[1:4])
size = int(sys.argv[4])
started.write_text('')
while not go.exists():
    time.sleep(0.05)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_bytes(b'k' * size)
"""


def held_step(tmp: Path, size: int = 1000) -> dict[str, Any]:
    """One step, retried on Error up to twice (as the pipelines' steps are), whose output is `model`."""
    return workflow([dag("main", [{"name": "hold", "template": "hold"}]), container(
        "hold", HOLD, str(tmp / "started"), str(tmp / "go"), "{{outputs.artifacts.model.path}}", str(size),
        out_artifacts=[{"name": "model", "path": "/o/model"}],
        retryStrategy={"limit": 2, "retryPolicy": "OnError"})],
        name="held", annotations={"kai-flows.io/outputs": '{"model": "hold.model"}'})


def run_in_thread(**kwargs: Any) -> tuple[threading.Thread, list[RunResult | BaseException]]:
    box: list[RunResult | BaseException] = []

    def target() -> None:
        try:
            box.append(run_pipeline(progress=False, **kwargs))
        except BaseException as e:  # handed to the test thread
            box.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def finished(thread: threading.Thread, box: list[Any]) -> RunResult:
    thread.join(120)
    assert not thread.is_alive(), "the run did not end"
    assert box and isinstance(box[0], RunResult), box
    return box[0]


def weed_pid(store_dir: Path) -> int:
    """The embedded store's process, as its data folder's lock file names it ("<engine pid>, weed pid <pid>")."""
    text = wait_for(lambda: (store_dir / "lock").exists() and "weed pid" in (t := (store_dir / "lock").read_text())
                    and t, "the embedded store to start")
    return int(text.rsplit("weed pid", 1)[1])


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_embedded_store_killed_mid_step_is_restarted_and_the_step_not_rerun(tmp_path):
    thread, box = run_in_thread(template=held_step(tmp_path), out=tmp_path / "out", cache=tmp_path / "cache",
                                store_dir=tmp_path / "store")
    try:
        wait_for(lambda: (tmp_path / "started").exists(), "the step to start", 60)
        first = weed_pid(tmp_path / "store")
        os.kill(first, signal.SIGKILL)
        # the step finishes only after the store died: its upload meets the restarted store
        wait_for(lambda: weed_pid(tmp_path / "store") != first, "the store to be restarted", 60)
    finally:
        (tmp_path / "go").write_text("")
    result = finished(thread, box)
    assert result.phase == "Succeeded", result.message
    assert result.node("hold").retries == 0  # no attempt recomputed for the store's fault
    assert (tmp_path / "out" / "model").read_bytes() == b"k" * 1000
    assert any("restarted it on" in w and str(tmp_path / "store") in w for w in result.warnings), result.warnings
    assert json.loads((tmp_path / "out" / "run.json").read_text())["phase"] == "Succeeded"


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_external_store_that_dies_stops_the_run_in_error_without_retries(tmp_path, monkeypatch):
    monkeypatch.setattr(store_guard, "PATIENCE_S", 2.0)
    server = EmbeddedSeaweedFS(tmp_path / "external")
    server.start()
    try:
        thread, box = run_in_thread(template=held_step(tmp_path), out=tmp_path / "out", cache=tmp_path / "cache",
                                    store=server.config("kai-external"))
        wait_for(lambda: (tmp_path / "started").exists(), "the step to start", 60)
    finally:
        server.stop()  # the endpoint is gone for good
    (tmp_path / "go").write_text("")
    result = finished(thread, box)
    assert result.phase == "Error"
    assert "the artifact store stopped answering for 2s" in result.message and "--resume" in result.message
    assert result.node("hold").retries == 0
    assert "\n" not in result.message
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["phase"] == "Error" and record["message"] == result.message  # never left Running
    assert not (tmp_path / "out" / "model").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A real 2 MiB filesystem (tmpfs): writing past it fails with ENOSPC."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_while_downloading_outputs_ends_in_error_with_nothing_partial(tmp_path, small_disk, store):
    (tmp_path / "go").write_text("")
    out = small_disk / "out"
    result = run_pipeline(held_step(tmp_path, size=4 * 1024 * 1024), out=out, cache=tmp_path / "cache",
                          store=store, progress=False)
    assert result.phase == "Error"
    assert "output 'model'" in result.message and "No space left on device" in result.message
    assert sorted(p.name for p in out.iterdir()) == ["logs", "run.json"]  # no partial download left behind
    record = json.loads((out / "run.json").read_text())
    assert record["phase"] == "Error" and "No space left on device" in record["message"]
