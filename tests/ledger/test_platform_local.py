"""The whole platform on one machine: `kai-flows coordinator --backend local` as a real process, the real PostgreSQL,
the local engine running the real `image-quality` pipeline on generated photos, the embedded SeaweedFS.

Checked from the ledger afterwards: every job ended exactly once (succeeded with its outputs' sha256 and size,
or the one bad job failed with its error), the per-class concurrency never went over the caps (from the status
history's timestamps), and the admission order is the weighted-fair schedule replayed from the history.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg
import pytest
from ledger_helpers import python
from PIL import Image

from kai_flows.ledger import jobs
from kai_flows.ledger.claim import STRIDE
from kai_flows.ledger.models import TERMINAL, Job, JobStatus

CONFIG = {"interactive": {"concurrency": 2, "weight": 10}, "batch": {"concurrency": 1, "weight": 5},
          "maintenance": {"concurrency": 1, "weight": 1}}
PLAN = {"interactive": 3, "batch": 3, "maintenance": 1}

pytestmark = pytest.mark.slow  # ~40 s on 2 cores: eight engine runs of the image-quality pipeline


def textured_photos(folder: Path, count: int = 4) -> Path:
    """320x240 PNGs with texture at several scales (sharp, well exposed, not duplicates of each other)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:240, 0:320]
    for i in range(count):
        stripes = 127 + 60 * np.sin((x * (i + 2) + y * (5 - i)) / 9.0)
        noise = rng.normal(0, 35, (240, 320))
        gray = np.clip(stripes + noise, 0, 255)
        rgb = np.stack([gray, np.roll(gray, 7 * i, axis=1), gray[::-1]], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"photo_{i}.png")
    return folder


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"coordinator exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def history_rows(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(
        """SELECT h.id, h.job_id, h.from_status, h.to_status, h.at, j.queue_class
             FROM job_status_history h JOIN jobs j ON j.id = h.job_id ORDER BY h.id""").fetchall()


def peak_concurrency(rows: list[dict]) -> dict[str, int]:
    """Per class, the most jobs in flight at once: [submitted, ended] intervals from the history timestamps."""
    events = []
    for r in rows:
        if r["to_status"] == JobStatus.SUBMITTED:
            events.append((r["at"], 1, r["queue_class"]))
        elif r["to_status"] in TERMINAL and r["from_status"] is not None:
            events.append((r["at"], -1, r["queue_class"]))
    level: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    for _, delta, q in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        level[q] += delta
        peak[q] = max(peak[q], level[q])
    return dict(peak)


def replay_admissions(rows: list[dict], enqueued: Counter[str]) -> list[str]:
    """Check each admission against the stride scheduler's choice given what was waiting and in flight then."""
    waiting, in_flight = Counter(enqueued), Counter()
    passes = dict.fromkeys(CONFIG, 0)
    vtime, order = 0, []
    for r in rows:
        q = r["queue_class"]
        if r["to_status"] == JobStatus.SUBMITTED:
            eligible = [c for c in CONFIG if waiting[c] and in_flight[c] < CONFIG[c]["concurrency"]]
            expected = min(eligible, key=lambda c: (max(passes[c], vtime), -CONFIG[c]["weight"], c))
            assert q == expected, f"admission {len(order) + 1} went to {q}, the schedule says {expected}"
            start = max(passes[q], vtime)
            passes[q], vtime = start + STRIDE // CONFIG[q]["weight"], start
            waiting[q] -= 1
            in_flight[q] += 1
            order.append(q)
        elif r["to_status"] in TERMINAL and r["from_status"] is not None:
            in_flight[q] -= 1
    return order


def test_platform_runs_queue_classes_on_the_local_engine(ledger_url: str, conn, tmp_path: Path) -> None:
    tenant_dir = tmp_path / "state" / "tenants" / "default"  # the only folders the default tenant's jobs may name
    photos = textured_photos(tenant_dir / "photos")
    (tenant_dir / "notes").mkdir()
    (tenant_dir / "notes" / "README.txt").write_text("no photos here\n")
    submitted: list[Job] = []
    for q, n in PLAN.items():
        submitted += [jobs.enqueue(conn, "image-quality", {"min_images": 3}, tier="pro", queue_class=q,
                                   input_uri=photos.as_uri()) for _ in range(n)]
    bad = jobs.enqueue(conn, "image-quality", {}, tier="pro", queue_class="maintenance",
                       input_uri=str(tenant_dir / "notes"))

    log = tmp_path / "coordinator.log"
    config = json.dumps(CONFIG)
    proc = python("-m", "kai_flows.cli", "coordinator", "--no-api", "--database-url", ledger_url, "--backend", "local",
                  "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", "--metrics-addr", "127.0.0.1",
                  "--poll-interval", "0.2", "--lease-seconds", "10", "--task-queue-config", config,
                  env={"KAI_TASK_QUEUE_CONFIG": config}, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for("every job to end", lambda: all(j.status in TERMINAL for j in jobs.list_jobs(conn)), proc, log, 150)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]

    # The ledger's final state: each job submitted once and ended once; outputs are the bytes on disk.
    for j in [*submitted, bad]:
        steps = Counter(h.to_status for h in jobs.history(conn, j.id))
        assert steps[JobStatus.SUBMITTED] == 1 and sum(steps[s] for s in TERMINAL) == 1, (j.queue_class, steps)
    for j in submitted:
        job = jobs.get_job(conn, j.id)
        assert job.status == JobStatus.SUCCEEDED, (job.queue_class, job.error)
        assert job.workflow_name == f"job-{j.id}-0"
        outs = {Path(o.uri.removeprefix("file://")).name: o for o in jobs.outputs(conn, j.id)}
        assert {"quality.json", "contact_sheet.png"} <= set(outs)
        for o in outs.values():
            data = Path(o.uri.removeprefix("file://")).read_bytes()
            assert (o.sha256, o.size) == (hashlib.sha256(data).hexdigest(), len(data))
        report = json.loads(Path(outs["quality.json"].uri.removeprefix("file://")).read_text())
        assert report["total"] == 4, report
    failed = jobs.get_job(conn, bad.id)
    assert failed.status == JobStatus.FAILED and "no image files" in failed.error, failed.error
    assert jobs.outputs(conn, bad.id) == []

    rows = history_rows(conn)
    # The caps held at every moment, and each class really ran at its cap at some point.
    assert peak_concurrency(rows) == {q: c["concurrency"] for q, c in CONFIG.items()}
    # Weighted-fair admission: every choice is the stride schedule's; first come, first served within a class.
    order = replay_admissions(rows, Counter({**PLAN, "maintenance": PLAN["maintenance"] + 1}))
    assert order[:4] == ["interactive", "batch", "maintenance", "interactive"]
    admitted = [r["job_id"] for r in rows if r["to_status"] == JobStatus.SUBMITTED]
    for q in CONFIG:
        mine = [j.id for j in [*submitted, bad] if j.queue_class == q]
        assert [i for i in admitted if i in mine] == mine


def test_coordinator_killed_mid_run_is_restarted_and_every_job_ends_once(ledger_url: str, conn,
                                                                         tmp_path: Path) -> None:
    """SIGKILL takes the coordinator and its embedded store; the engine children live on. The next coordinator
    adopts the in-flight jobs, finds their workflows on disk, resumes the runs whose store vanished, and each job
    succeeds exactly once, without a second workflow."""
    photos = textured_photos(tmp_path / "state" / "tenants" / "default" / "photos")
    plan = {"interactive": 2, "batch": 2}
    submitted = [jobs.enqueue(conn, "image-quality", {}, tier="pro", queue_class=q, input_uri=str(photos))
                 for q, n in plan.items() for _ in range(n)]
    config, state, log = json.dumps(CONFIG), tmp_path / "state", tmp_path / "coordinator.log"

    def start() -> subprocess.Popen:
        return python("-m", "kai_flows.cli", "coordinator", "--no-api", "--database-url", ledger_url,
                      "--backend", "local", "--state-dir", str(state), "--metrics-port", "0",
                      "--metrics-addr", "127.0.0.1",
                      "--poll-interval", "0.2", "--lease-seconds", "2", "--task-queue-config", config,
                      env={"KAI_TASK_QUEUE_CONFIG": config}, stdout=log.open("a"), stderr=subprocess.STDOUT)

    first = start()
    try:
        wait_for("a job to run while others wait",
                 lambda: Counter(j.status for j in jobs.list_jobs(conn))[JobStatus.RUNNING] >= 2, first, log, 60)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert not any(j.status in TERMINAL for j in jobs.list_jobs(conn))  # killed before any job was recorded done
    second = start()
    try:
        wait_for("every job to end after the restart",
                 lambda: all(j.status in TERMINAL for j in jobs.list_jobs(conn)), second, log, 120)
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]
    assert "adopted job" in log.read_text()
    for j in submitted:
        job = jobs.get_job(conn, j.id)
        steps = Counter(h.to_status for h in jobs.history(conn, j.id))
        assert job.status == JobStatus.SUCCEEDED, (job.error, log.read_text()[-3000:])
        assert steps[JobStatus.SUBMITTED] == 1 and steps[JobStatus.SUCCEEDED] == 1, steps
        assert any(Path(o.uri).name == "quality.json" for o in jobs.outputs(conn, j.id))
    assert sorted(p.name for p in (state / "workflows").iterdir()) == sorted(f"job-{j.id}-0" for j in submitted)
    assert peak_concurrency(history_rows(conn)) == {"interactive": 2, "batch": 1}


def test_coordinator_refuses_folders_outside_the_jobs_tenant(ledger_url: str, conn, tmp_path: Path) -> None:
    """Tenants sharing a coordinator: a job names only folders inside its tenant's folder on the coordinator's
    host, as input and as output; another tenant's photos, any host folder and a symlink out are refused by name,
    before anything runs."""
    state = tmp_path / "state"
    photos = textured_photos(state / "tenants" / "default" / "photos")
    (state / "tenants" / "mallory").mkdir(parents=True)
    escape = state / "tenants" / "mallory" / "link"
    escape.symlink_to(photos)  # inside mallory's folder by name, default's photos by target
    intruders = [jobs.enqueue(conn, "image-quality", {}, tier="pro", queue_class="interactive", tenant="mallory",
                              input_uri=uri) for uri in (str(photos), "/etc", str(escape))]
    writer = jobs.enqueue(conn, "image-quality", {}, tier="pro", queue_class="interactive", input_uri=str(photos),
                          output_uri=str(tmp_path / "elsewhere"))
    own = jobs.enqueue(conn, "image-quality", {}, tier="pro", queue_class="interactive", input_uri=str(photos))
    log = tmp_path / "coordinator.log"
    proc = python("-m", "kai_flows.cli", "coordinator", "--no-api", "--database-url", ledger_url, "--backend", "local",
                  "--state-dir", str(state), "--metrics-port", "0", "--metrics-addr", "127.0.0.1",
                  "--poll-interval", "0.2", stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for("every job to end", lambda: all(j.status in TERMINAL for j in jobs.list_jobs(conn)), proc, log, 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    for job, folder in zip(intruders, (photos, Path("/etc"), photos), strict=True):  # the link: by its target
        refused = jobs.get_job(conn, job.id)
        assert refused.status == JobStatus.FAILED and refused.workflow_name is None, refused
        assert refused.error == (f"submission failed: input 'images': folder {str(folder)!r} is outside tenant "
                                 f"'mallory''s folder ({state / 'tenants' / 'mallory'}); a job reads and writes only "
                                 "its own tenant's folder")
    refused = jobs.get_job(conn, writer.id)
    assert refused.status == JobStatus.FAILED and refused.error.startswith(
        f"submission failed: output: folder {str(tmp_path / 'elsewhere')!r} is outside tenant 'default''s folder")
    assert not (tmp_path / "elsewhere").exists()
    assert jobs.get_job(conn, own.id).status == JobStatus.SUCCEEDED, jobs.get_job(conn, own.id).error
