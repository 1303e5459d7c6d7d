"""A real engine process interrupted: SIGINT stops the steps and records the run Failed; SIGKILL mid-run, then
`resume`, finishes with outputs identical to an uninterrupted run and nothing half-written."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kai_flows.engine import run_pipeline
from tests.conftest import REPO
from tests.engine.wf import OK, container, dag, workflow

CHILD = Path(__file__).with_name("_engine_child.py")


def start_engine(doc: dict, tmp: Path, env_store: dict[str, str], *extra: str) -> subprocess.Popen:
    doc_path = tmp / "doc.json"
    doc_path.write_text(json.dumps(doc))
    env = {**os.environ, **env_store, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(CHILD), str(doc_path), str(tmp / "out"), str(tmp / "cache"), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(cond: Any, what: str, timeout: float = 30) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def record(tmp: Path) -> dict | None:
    path = tmp / "out" / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())  # atomic writes: always complete JSON


def node_phase(rec: dict | None, display: str) -> str | None:
    for n in (rec or {}).get("nodes", {}).values():
        if n["displayName"] == display:
            return n["phase"]
    return None


def test_sigint_stops_steps_and_records_failed(tmp_path, seaweed_server):
    pidfile = tmp_path / "grandchild.pid"
    hang = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '120']); "
            "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(120)")
    doc = workflow([dag("main", [{"name": "quick", "template": "ok"}, {"name": "hang", "template": "hang"},
                                 {"name": "later", "template": "ok", "depends": "quick && hang"}]),
                    container("ok", OK), container("hang", hang, str(pidfile))])
    proc = start_engine(doc, tmp_path, seaweed_server.config("kai-sigint").to_env())
    try:
        wait_for(lambda: pidfile.exists() and node_phase(record(tmp_path), "quick") == "Succeeded", "steps to run")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 1, out.decode()
    rec = record(tmp_path)
    assert rec["phase"] == "Failed" and "SIGINT" in rec["message"]
    assert node_phase(rec, "quick") == "Succeeded"  # what finished is kept
    assert node_phase(rec, "hang") == "Failed"
    assert node_phase(rec, "later") is None  # never started
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or Path(f"/proc/{grandchild}/stat").read_text().split()[2] == "Z"


def resumable_pipeline(marks: Path) -> dict:
    """gen -> fan(4 slow items, each writes an artifact) -> agg (report from the fan's results)."""
    write = ("import sys, time, pathlib; pathlib.Path(sys.argv[3], sys.argv[1]).write_text('x'); time.sleep(0.7); "
             "o = pathlib.Path(sys.argv[2]); o.mkdir(); (o / 'data.txt').write_text('item ' + sys.argv[1] * 1000); "
             "print(sys.argv[1])")
    agg = ("import sys, pathlib, json; pathlib.Path(sys.argv[3], 'agg').write_text('x'); "
           "pathlib.Path(sys.argv[2]).write_text(json.dumps(sorted(json.loads(sys.argv[1]))))")
    return workflow([
        dag("main", [
            {"name": "fan", "template": "work", "withItems": ["a", "b", "c", "d"],
             "arguments": {"parameters": [{"name": "i", "value": "{{item}}"}]}},
            {"name": "agg", "template": "agg", "depends": "fan",
             "arguments": {"parameters": [{"name": "r", "value": "{{tasks.fan.outputs.result}}"}]}},
        ]),
        container("work", write, "{{inputs.parameters.i}}", "{{outputs.artifacts.out.path}}", str(marks),
                  params=[{"name": "i"}], out_artifacts=[{"name": "out", "path": "/o/out"}]),
        container("agg", agg, "{{inputs.parameters.r}}", "{{outputs.artifacts.report.path}}", str(marks),
                  params=[{"name": "r"}], out_artifacts=[{"name": "report", "path": "/o/report"}]),
    ], name="resumable", annotations={"kai-flows.io/outputs": '{"report": "agg.report"}'})


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, seaweed_server):
    bucket = "kai-resume"
    env_store = seaweed_server.config(bucket).to_env()
    store = seaweed_server.store(bucket)
    # the reference: an uninterrupted run
    ref_marks = tmp_path / "ref-marks"
    ref_marks.mkdir()
    ref = run_pipeline(resumable_pipeline(ref_marks), out=tmp_path / "ref", store=store, cache=tmp_path / "ref-c",
                       progress=False)
    assert ref.phase == "Succeeded", ref.message

    work = tmp_path / "killed"
    work.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    doc = resumable_pipeline(marks)
    proc = start_engine(doc, work, env_store)
    try:
        rec = wait_for(lambda: (r := record(work)) and sum(
            1 for n in r["nodes"].values() if n["type"] == "Pod" and n["phase"] == "Succeeded") >= 2 and r,
            "two fan-out steps to succeed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    rec = record(work)
    assert rec is not None and rec["phase"] == "Running"  # killed mid-run; the record is whole JSON
    run_name = rec["kai"]["name"]
    from kai_flows.engine.runner import runs_table

    listed = next(r for r in runs_table(work / "cache") if r["name"] == run_name)
    assert listed["phase"] == "Interrupted" and "--resume" in listed["message"]  # not "Running" forever
    done_before = {n["displayName"] for n in rec["nodes"].values() if n["phase"] == "Succeeded" and n["type"] == "Pod"}
    assert not (work / "out" / "report").exists()
    for p in marks.iterdir():
        p.unlink()

    resumed = run_pipeline(doc, out=work / "out", store=store, cache=work / "cache", resume=run_name,
                           progress=False)
    assert resumed.phase == "Succeeded", resumed.message
    assert resumed.name == run_name
    assert (work / "out" / "report").read_bytes() == (tmp_path / "ref" / "report").read_bytes()
    reran = {p.name for p in marks.iterdir()}
    for display in done_before:
        item = display[display.index(":") + 1:-1]
        assert item not in reran, f"{display} ran again after resume"
        assert resumed.node(display).reused
    # every artifact the run recorded is fully published; nothing partial lies in --out
    for n in resumed.nodes.values():
        for art in n.outputs.get("artifacts", []):
            assert store.exists(art["s3"]["key"])
    assert not [p for p in (work / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("concurrency", [1])
def test_queue_semaphore_limits_steps_across_the_run(run, tmp_path, monkeypatch, concurrency):
    """synchronization.semaphores with a configMapKeyRef into kai-queues: at most `concurrency` pods hold it."""
    monkeypatch.setenv("KAI_TASK_QUEUE_CONFIG", json.dumps({
        "interactive": {"concurrency": concurrency, "weight": 10}, "batch": {"concurrency": 10, "weight": 5},
        "maintenance": {"concurrency": 2, "weight": 1}}))
    log = tmp_path / "spans"
    log.mkdir()
    code = ("import sys, time, pathlib; s = time.time(); time.sleep(0.3); "
            "pathlib.Path(sys.argv[1], sys.argv[2]).write_text(f'{s} {time.time()}')")
    step = container("span", code, str(log), "{{inputs.parameters.i}}", params=[{"name": "i"}],
                     synchronization={"semaphores": [{"configMapKeyRef": {"name": "kai-queues",
                                                                          "key": "interactive"}}]})
    doc = workflow([dag("main", [{"name": "fan", "template": "span", "withItems": [1, 2, 3],
                                  "arguments": {"parameters": [{"name": "i", "value": "{{item}}"}]}}]), step])
    r = run(doc, parallelism=3)
    assert r.phase == "Succeeded", r.message
    spans = sorted(tuple(map(float, p.read_text().split())) for p in log.iterdir())
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
