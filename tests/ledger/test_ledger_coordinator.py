"""The coordinator against the real PostgreSQL and real subprocess jobs: admission, outputs, metrics, crashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar
from uuid import UUID

import psycopg
import pytest
from fake_runner import SubprocessRunner
from ledger_helpers import cli, python
from prometheus_client.parser import text_string_to_metric_families

from kai_flows.ledger import jobs
from kai_flows.ledger.coordinator import Coordinator
from kai_flows.ledger.errors import BackendError, WorkflowNotFound
from kai_flows.ledger.models import TERMINAL, Job, JobStatus
from kai_flows.ledger.runner import RunStatus
from kai_flows.policy import parse_task_queue_config

CRASHER = str(Path(__file__).with_name("_crashing_coordinator.py"))
FAKE = "fake_runner:SubprocessRunner"  # the CLI's --backend for the tests' runner (tests/ledger is importable)
CONFIG = {"interactive": {"concurrency": 2, "weight": 10}, "batch": {"concurrency": 2, "weight": 5},
          "maintenance": {"concurrency": 1, "weight": 1}}


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0, step: Callable[[], object] | None = None):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if step:
            step()
        time.sleep(0.05)


def enqueue_mix(conn: psycopg.Connection, sleep: float, plan: dict[str, int], failing: int = 1) -> list[Job]:
    out = []
    for q, n in plan.items():
        for k in range(n):
            fail = q == "batch" and k < failing
            params = {"sleep": sleep, "exit_code": 1 if fail else 0, "output": f"{q}-{k}"}
            out.append(jobs.enqueue(conn, "demo", params, tier="pro", queue_class=q))
    return out


def all_terminal(conn: psycopg.Connection) -> bool:
    return all(j.status in TERMINAL for j in jobs.list_jobs(conn))


def max_overlap(state_dir: Path, conn: psycopg.Connection) -> dict[str, int]:
    """Per class, the most job processes that really ran at the same time (from their own timestamps)."""
    events: list[tuple[float, int, str]] = []
    for d in state_dir.iterdir():
        if (d / "started").is_file():
            q = jobs.get_job(conn, json.loads((d / "label.json").read_text())["job_id"]).queue_class
            events += [(float((d / "started").read_text()), 1, q)]
            end = float((d / "finished").read_text()) if (d / "finished").is_file() else float("inf")
            events += [(end, -1, q)]
    level: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    for _, delta, q in sorted(events):
        level[q] += delta
        peak[q] = max(peak[q], level[q])
    return dict(peak)


def check_final_ledger(conn: psycopg.Connection, backend: SubprocessRunner, submitted: list[Job]) -> None:
    """Every job ended exactly once, ran exactly once, and its outputs are the bytes it wrote."""
    assert all_terminal(conn)
    assert sorted(backend.workflows()) == sorted(SubprocessRunner.workflow_name(j.id, 0) for j in submitted)
    for j in submitted:
        job = jobs.get_job(conn, j.id)
        steps = Counter(h.to_status for h in jobs.history(conn, j.id))
        assert steps[JobStatus.SUBMITTED] == 1 and sum(steps[s] for s in TERMINAL) == 1, (job.id, steps)
        assert job.workflow_name == SubprocessRunner.workflow_name(j.id, 0)
        if j.parameters["exit_code"]:
            assert (job.status, job.error) == (JobStatus.FAILED, "exit code 1")
        else:
            assert job.status == JobStatus.SUCCEEDED
            [o] = jobs.outputs(conn, j.id)
            data = j.parameters["output"].encode()
            assert (o.sha256, o.size) == (hashlib.sha256(data).hexdigest(), len(data))
            assert Path(o.uri.removeprefix("file://")).read_bytes() == data


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_coordinator_runs_jobs_records_outputs_and_serves_metrics(ledger_url: str, conn, tmp_path: Path) -> None:
    submitted = enqueue_mix(conn, 0.3, {"interactive": 3, "batch": 2, "maintenance": 1})
    backend = SubprocessRunner(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1")
    port = c.serve_metrics(0, "127.0.0.1")
    c.run_once()
    m = metrics(port)
    assert m[("kai_queue_depth", (("queue_class", "interactive"),))] == 1  # 3 jobs, cap 2
    assert m[("kai_jobs_in_flight", (("queue_class", "interactive"),))] == 2
    assert m[("kai_jobs_in_flight", (("queue_class", "maintenance"),))] == 1
    wait_until("every job to end", lambda: all_terminal(conn), step=c.run_once)
    c.run_once()
    check_final_ledger(conn, backend, submitted)
    caps = {q: v["concurrency"] for q, v in CONFIG.items()}
    assert all(n <= caps[q] for q, n in max_overlap(tmp_path / "wf", conn).items())
    m = metrics(port)
    assert m[("kai_job_failures_total", (("queue_class", "batch"),))] == 1
    assert m[("kai_job_duration_seconds_count", (("queue_class", "interactive"), ("status", "succeeded")))] == 3
    assert m[("kai_job_duration_seconds_sum", (("queue_class", "interactive"), ("status", "succeeded")))] >= 0.9
    assert m[("kai_queue_depth", (("queue_class", "interactive"),))] == 0
    c.close()


def start_cli(url: str, state_dir: Path, log: Path) -> subprocess.Popen:
    return python("-m", "kai_flows.cli.ledger", "coordinator", "--no-api", "--database-url", url, "--backend", FAKE,
                  "--state-dir", str(state_dir), "--metrics-port", "0", "--metrics-addr", "127.0.0.1",
                  "--poll-interval", "0.05", "--lease-seconds", "1", "--task-queue-config", json.dumps(CONFIG),
                  stdout=log.open("a"), stderr=subprocess.STDOUT)


def test_coordinator_killed_mid_way_and_restarted_ends_every_job_once(ledger_url: str, conn, tmp_path: Path) -> None:
    submitted = enqueue_mix(conn, 0.3, {"interactive": 5, "batch": 4, "maintenance": 3}, failing=2)
    state, log = tmp_path / "wf", tmp_path / "coordinator.log"
    first = start_cli(ledger_url, state, log)

    def mid_way() -> bool:
        # Freeze the coordinator, look at the ledger; kill it if jobs are done, in flight and waiting at once.
        first.send_signal(signal.SIGSTOP)
        statuses = Counter(j.status for j in jobs.list_jobs(conn))
        if (sum(statuses[s] for s in TERMINAL) >= 3 and statuses[JobStatus.QUEUED] > 0
                and statuses[JobStatus.SUBMITTED] + statuses[JobStatus.RUNNING] > 0):
            first.send_signal(signal.SIGKILL)
            return True
        first.send_signal(signal.SIGCONT)
        return False

    wait_until("a moment with jobs ended, in flight and waiting", mid_way)
    assert first.wait(timeout=10) == -signal.SIGKILL
    in_flight = [j for j in jobs.list_jobs(conn) if j.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)]
    assert in_flight and all(j.claimed_by == in_flight[0].claimed_by for j in in_flight)

    second = start_cli(ledger_url, state, log)
    try:
        wait_until("every job to end after the restart", lambda: all_terminal(conn))
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0, log.read_text()
    assert "adopted job" in log.read_text()
    check_final_ledger(conn, SubprocessRunner(state), submitted)
    caps = {q: v["concurrency"] for q, v in CONFIG.items()}
    assert all(n <= caps[q] for q, n in max_overlap(state, conn).items())
    admitted = conn.execute(
        """SELECT j.id, j.queue_class FROM job_status_history h JOIN jobs j ON j.id = h.job_id
            WHERE h.to_status = 'submitted' ORDER BY h.id""").fetchall()
    assert admitted[0]["queue_class"] == "interactive"
    for q in CONFIG:  # first come, first served within a class
        assert [r["id"] for r in admitted if r["queue_class"] == q] == [j.id for j in submitted if j.queue_class == q]


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_around_submission_never_submits_twice(ledger_url: str, conn, tmp_path: Path, when: str) -> None:
    submitted = enqueue_mix(conn, 0.2, {"batch": 4}, failing=0)
    state = tmp_path / "wf"
    config = json.dumps({"batch": {"concurrency": 4, "weight": 1}})
    crasher = python(CRASHER, ledger_url, config, str(state), "2", when, stderr=subprocess.PIPE)
    assert crasher.wait(timeout=30) == -signal.SIGKILL, crasher.stderr.read()
    second = jobs.get_job(conn, submitted[1].id)
    assert (second.status, second.workflow_name) == (JobStatus.SUBMITTED, None)  # the ledger never heard of it
    labelled = SubprocessRunner(state).find_by_label(second.id, 0)
    assert (labelled is not None) == (when == "after")

    class Counting(SubprocessRunner):
        submits: ClassVar[list[UUID]] = []

        def submit(self, job: Job) -> str:
            self.submits.append(job.id)
            return super().submit(job)

    backend = Counting(state)
    c = Coordinator(ledger_url, backend, parse_task_queue_config(config), 0.05, claimer="c2", lease_seconds=5)
    wait_until("every job to end", lambda: all_terminal(conn), step=c.run_once)
    c.close()
    check_final_ledger(conn, backend, submitted)
    # Found again by its label, not created a second time; only a job never created is submitted now.
    assert (second.id in backend.submits) == (when == "before")
    assert submitted[0].id not in backend.submits


@pytest.mark.parametrize("when", ["in-claim", "in-record"])
def test_crash_inside_a_ledger_transaction_loses_and_duplicates_nothing(
        ledger_url: str, conn, tmp_path: Path, when: str) -> None:
    """SIGKILL with the claim (or the final status) written but not committed: PostgreSQL rolls it back, another
    coordinator admits (or records) it once."""
    submitted = enqueue_mix(conn, 0.1, {"batch": 3}, failing=0)
    state = tmp_path / "wf"
    config = json.dumps({"batch": {"concurrency": 3, "weight": 1}})
    crasher = python(CRASHER, ledger_url, config, str(state), "2", when, stderr=subprocess.PIPE)
    assert crasher.wait(timeout=30) == -signal.SIGKILL, crasher.stderr.read()
    if when == "in-claim":  # the second claim never happened: queued, no history row, nothing created
        second = jobs.get_job(conn, submitted[1].id)
        assert second.status == JobStatus.QUEUED and [h.to_status for h in jobs.history(conn, second.id)] == ["queued"]
        assert SubprocessRunner(state).find_by_label(second.id, 0) is None
    else:  # one job's workflow ended, its final status was rolled back: still in flight in the ledger
        assert sum(jobs.get_job(conn, j.id).status in TERMINAL for j in submitted) == 1
    backend = SubprocessRunner(state)
    c = Coordinator(ledger_url, backend, parse_task_queue_config(config), 0.05, claimer="c2", lease_seconds=5)
    wait_until("every job to end", lambda: all_terminal(conn), step=c.run_once)
    c.close()
    check_final_ledger(conn, backend, submitted)


def test_cancelling_a_running_job_stops_its_workflow(ledger_url: str, conn, tmp_path: Path) -> None:
    [job] = enqueue_mix(conn, 60, {"interactive": 1})
    backend = SubprocessRunner(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1")
    wait_until("the job to run", lambda: jobs.get_job(conn, job.id).status == JobStatus.RUNNING, step=c.run_once)
    name = jobs.get_job(conn, job.id).workflow_name
    pid = int((tmp_path / "wf" / name / "pid").read_text())
    jobs.cancel(conn, job.id, actor="operator", reason="user cancelled")
    c.run_once()
    assert c.active == {}
    assert backend.status(name).phase == "Failed" and backend.status(name).message == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    final = jobs.get_job(conn, job.id)
    assert (final.status, final.error) == (JobStatus.CANCELLED, "user cancelled")
    c.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--database-url", "postgresql://postgres@127.0.0.1:5999/x"], "error: cannot connect to PostgreSQL"),
    (["--task-queue-config", "{nope"], "error: task_queue_config: not valid JSON"),
    (["--backend", "k8s"], "error: unknown backend 'k8s'; known: local, argo (or module:callable)"),
    (["--backend", "fake_runner:Nope"], "error: backend 'fake_runner:Nope': module 'fake_runner' has no attribute"),
    (["--backend", "fake_runner:START_GRACE_S"], "error: backend 'fake_runner:START_GRACE_S': 'float' object is not"),
])
def test_cli_coordinator_bad_input(ledger_url: str, tmp_path: Path, args: list[str], message: str) -> None:
    base = {"--database-url": ledger_url, "--backend": FAKE, "--state-dir": str(tmp_path)}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    r = cli("coordinator", "--no-api", *[x for kv in base.items() for x in kv])
    assert r.exit_code == 1 and r.stderr.startswith(message) and "Traceback" not in r.output, r.output


def test_backend_ids_round_trip() -> None:
    job_id = UUID("12345678-1234-5678-1234-567812345678")
    assert SubprocessRunner.workflow_name(job_id, 3) == f"job-{job_id}-3"


class FlakyBackend(SubprocessRunner):
    """Fails the first submit of every job with a transient error; refuses jobs whose pipeline is 'refused'."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.tries: Counter[UUID] = Counter()

    def submit(self, job: Job) -> str:
        self.tries[job.id] += 1
        if job.pipeline == "refused":
            raise BackendError("WorkflowTemplate 'refused' not found")
        if self.tries[job.id] == 1:
            raise ConnectionError("argo server: connection reset")
        return super().submit(job)


def test_transient_backend_errors_are_retried_and_refusals_fail_the_job(ledger_url: str, conn, tmp_path: Path) -> None:
    ok = jobs.enqueue(conn, "demo", {"sleep": 0, "output": "x"}, tier="pro", queue_class="batch")
    refused = jobs.enqueue(conn, "refused", {}, tier="pro", queue_class="batch")
    backend = FlakyBackend(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1")
    wait_until("both jobs to end", lambda: all_terminal(conn), step=c.run_once)
    c.close()
    assert backend.tries[ok.id] == 2 and backend.workflows() == [SubprocessRunner.workflow_name(ok.id, 0)]
    assert jobs.get_job(conn, ok.id).status == JobStatus.SUCCEEDED
    final = jobs.get_job(conn, refused.id)
    assert (final.status, final.error) == (
        JobStatus.FAILED, "submission failed: WorkflowTemplate 'refused' not found")


def test_job_cancelled_while_being_submitted_gets_its_workflow_cancelled(ledger_url: str, conn, tmp_path: Path) -> None:
    job = jobs.enqueue(conn, "demo", {"sleep": 60}, tier="pro", queue_class="batch")

    class CancelledMeanwhile(SubprocessRunner):
        def submit(self, j: Job) -> str:
            name = super().submit(j)
            jobs.cancel(conn, j.id, actor="operator")  # lands between creation and recording
            return name

    backend = CancelledMeanwhile(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1")
    c.run_once()
    c.close()
    name = SubprocessRunner.workflow_name(job.id, 0)
    assert c.active == {} and (tmp_path / "wf" / name / "cancelled").is_file()
    assert jobs.get_job(conn, job.id).status == JobStatus.CANCELLED
    assert backend.status(name) == RunStatus("Failed", (), "cancelled")
    assert not (tmp_path / "wf" / name / "finished").exists()


def test_a_workflow_deleted_behind_the_coordinators_back_fails_its_job(ledger_url: str, conn, tmp_path: Path) -> None:
    [job] = enqueue_mix(conn, 60, {"interactive": 1})
    backend = SubprocessRunner(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1")
    wait_until("the job to run", lambda: jobs.get_job(conn, job.id).status == JobStatus.RUNNING, step=c.run_once)
    name = jobs.get_job(conn, job.id).workflow_name
    backend.cancel(name)
    shutil.rmtree(tmp_path / "wf" / name)  # gone from the runner: WorkflowNotFound, not a transient error
    with pytest.raises(WorkflowNotFound):
        backend.status(name)
    c.run_once()
    c.close()
    final = jobs.get_job(conn, job.id)
    assert (final.status, final.error) == (JobStatus.FAILED, f"no workflow {name} in {tmp_path / 'wf'}")


def test_a_backend_refusal_holds_its_class_and_others_go_on(ledger_url: str, conn, tmp_path: Path) -> None:
    from kai_flows.ledger import holds

    class Refusing(SubprocessRunner):
        refusals = 2

        def submit(self, job: Job) -> str:
            if job.queue_class == "batch" and Refusing.refusals > 0:
                Refusing.refusals -= 1
                raise ConnectionError("argo server: HTTP 503 Service Unavailable")
            return super().submit(job)

    submitted = enqueue_mix(conn, 0.1, {"batch": 2, "interactive": 2}, failing=0)
    backend = Refusing(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1",
                    refusal_hold=1.0)
    c.run_once()
    [hold] = holds.active_holds(conn)["batch"]
    assert hold.reason == "backend_refused" and "HTTP 503" in hold.detail and hold.held_by == "c1"
    statuses = Counter((j.queue_class, jobs.get_job(conn, j.id).status) for j in submitted)
    assert statuses[("batch", JobStatus.QUEUED)] == 1  # the second batch job waits for the hold to lapse
    assert statuses[("interactive", JobStatus.QUEUED)] == 0  # the other class is admitted meanwhile
    wait_until("every job to end", lambda: all_terminal(conn), step=c.run_once)
    c.close()
    check_final_ledger(conn, backend, submitted)
    assert "batch" not in holds.active_holds(conn)  # released once a submission went through


def test_an_unschedulable_workflow_holds_its_class_until_placed(ledger_url: str, conn, tmp_path: Path) -> None:
    from kai_flows.ledger import holds

    stuck = jobs.enqueue(conn, "demo", {"sleep": 0, "output": "x", "unschedulable": "0/3 nodes are available"},
                         tier="pro", queue_class="batch")
    backend = SubprocessRunner(tmp_path / "wf")
    c = Coordinator(ledger_url, backend, parse_task_queue_config(json.dumps(CONFIG)), 0.05, claimer="c1",
                    unschedulable_after=0.3)
    wait_until("batch to be held", lambda: "batch" in holds.active_holds(conn), step=c.run_once)
    waiting = jobs.enqueue(conn, "demo", {"sleep": 0, "output": "y"}, tier="pro", queue_class="batch")
    fine = jobs.enqueue(conn, "demo", {"sleep": 0, "output": "z"}, tier="pro", queue_class="interactive")
    wait_until("the other class's job to end", lambda: jobs.get_job(conn, fine.id).status in TERMINAL,
               step=c.run_once)
    assert jobs.get_job(conn, waiting.id).status == JobStatus.QUEUED
    [hold] = holds.active_holds(conn)["batch"]
    assert hold.detail == f"workflow job-{stuck.id}-0: Unschedulable: 0/3 nodes are available"
    backend.schedule(f"job-{stuck.id}-0")
    wait_until("every job to end", lambda: all_terminal(conn), step=c.run_once)
    c.close()
    assert "batch" not in holds.active_holds(conn)
    assert all(jobs.get_job(conn, j.id).status == JobStatus.SUCCEEDED for j in (stuck, waiting, fine))


def test_a_job_cancelled_while_its_coordinator_is_dead_gets_its_workflow_stopped(ledger_url: str, conn,
                                                                                tmp_path: Path) -> None:
    [job] = enqueue_mix(conn, 60, {"interactive": 1})
    backend = SubprocessRunner(tmp_path / "wf")
    queues = parse_task_queue_config(json.dumps(CONFIG))
    dead = Coordinator(ledger_url, backend, queues, 0.05, claimer="dead", lease_seconds=0.5)
    wait_until("the job to run", lambda: jobs.get_job(conn, job.id).status == JobStatus.RUNNING, step=dead.run_once)
    dead.close()  # it stops here, as if SIGKILLed: nobody follows the job now
    cancelled = jobs.cancel(conn, job.id, actor="api", reason="user cancelled")
    assert cancelled.stop_workflow and cancelled.claimed_by == "dead"  # its workflow still runs
    time.sleep(0.6)  # the dead coordinator's lease lapses
    other = Coordinator(ledger_url, SubprocessRunner(tmp_path / "wf"), queues, 0.05, claimer="other")
    other.run_once()
    other.close()
    name = SubprocessRunner.workflow_name(job.id, 0)
    assert (tmp_path / "wf" / name / "cancelled").is_file()  # stopped by the coordinator that adopted it
    final = jobs.get_job(conn, job.id)
    assert (final.status, final.stop_workflow, final.claimed_by) == (JobStatus.CANCELLED, False, None)
    wait_until("the job's process to end", lambda: backend.status(name).phase == "Failed")
