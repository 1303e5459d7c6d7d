"""Several coordinator replicas (real processes, `kai-flows coordinator`) over one ledger: any replica answers
for any job, and a SIGKILLed replica loses and duplicates nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
from fake_runner import SubprocessRunner
from ledger_helpers import python

from kai_flows.ledger import jobs
from kai_flows.ledger.models import TERMINAL, JobStatus
from kai_flows.service import CoordinatorClient
from tests.service.conftest import TOKEN, free_port, wait_http

CONFIG = {"interactive": {"concurrency": 3, "weight": 10}, "batch": {"concurrency": 3, "weight": 5},
          "maintenance": {"concurrency": 1, "weight": 1}}


class Replica:
    def __init__(self, url: str, state: Path, name: str, log: Path) -> None:
        self.api_port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.args = ("-m", "kai_flows.cli", "coordinator", "--database-url", url, "--backend",
                     "fake_runner:SubprocessRunner", "--state-dir", str(state), "--api-addr", "127.0.0.1",
                     "--api-port", str(self.api_port), "--metrics-addr", "127.0.0.1", "--metrics-port",
                     str(self.metrics_port), "--claimer", name, "--poll-interval", "0.1", "--lease-seconds", "1",
                     "--task-queue-config", json.dumps(CONFIG))
        self.log = log
        self.start()

    def start(self) -> None:
        self.proc = python(*self.args, env={"KAI_API_TOKEN": TOKEN, "FAKE_RUNNER_SLEEP": "0.3"},
                           stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_http(self.url + "/readyz", proc=self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, self.log.read_text()[-2000:]

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_until(what: str, check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_three_replicas_one_truth_through_a_sigkill(ledger_url: str, conn: psycopg.Connection, tmp_path: Path) -> None:
    state = tmp_path / "wf"
    replicas = [Replica(ledger_url, state, f"r{i}", tmp_path / f"r{i}.log") for i in range(3)]
    clients = [CoordinatorClient(r.url, TOKEN) for r in replicas]
    # A job that runs until cancelled (the fake runner's own knob; enqueued in the ledger, read through the API).
    long_job = jobs.enqueue(conn, "demo", {"sleep": 60}, tier="pro", queue_class="batch")
    try:
        submitted = [  # round-robin over the replicas' APIs, as a Service spreads requests
            clients[k % 3].submit("image-quality", {"images": f"uploads/default/set-{k}/"},
                                  queue=("interactive", "batch", "maintenance")[k % 3], idempotency_key=f"k{k}")
            for k in range(18)
        ]
        wait_until("some jobs to start", lambda: len(clients[1].list(status="succeeded")) >= 3)
        replicas[0].proc.send_signal(signal.SIGKILL)  # mid-flight: its leases lapse, the others adopt its jobs
        replicas[0].proc.wait(timeout=10)
        wait_until("the long job to run", lambda: clients[1].get(long_job.id).status == JobStatus.RUNNING)
        assert clients[2].cancel(long_job.id).status == JobStatus.CANCELLED  # through any replica
        wait_until("every job to end", lambda: all(clients[2].get(j.id).status in TERMINAL for j in submitted),
                   timeout=120)
        replicas[0].start()  # back under its own name: nothing runs twice
        time.sleep(1)
        admitted = sum(r.metric("kai_jobs_admitted_total") for r in replicas[1:])
        assert admitted >= 1
    finally:
        for c in clients:
            c.close()
        for r in replicas:
            r.stop()
    backend = SubprocessRunner(state)
    everything = [*(j.id for j in submitted), long_job.id]
    assert sorted(backend.workflows()) == sorted(backend.workflow_name(i, 0) for i in everything)  # one each
    for job_id in everything:
        steps = Counter(h.to_status for h in jobs.history(conn, job_id))
        assert steps[JobStatus.SUBMITTED] == 1 and sum(steps[s] for s in TERMINAL) == 1, (job_id, steps)
    assert all(jobs.get_job(conn, j.id).status == JobStatus.SUCCEEDED for j in submitted)
    long_dir = state / backend.workflow_name(long_job.id, 0)
    assert (long_dir / "cancelled").is_file()  # its workflow was stopped, not left to finish
    assert not (long_dir / "rc").is_file() or (long_dir / "rc").read_text() != "0"
    owners = {h.actor for j in submitted for h in jobs.history(conn, j.id) if h.to_status == JobStatus.SUBMITTED}
    assert len(owners) >= 2, owners  # the work really was spread over the replicas


def test_one_command_starts_replicas_that_share_the_work(ledger_url: str, conn: psycopg.Connection,
                                                         tmp_path: Path) -> None:
    """`kai-flows coordinator --replicas 2`: a token made and kept 0600, ports in pairs, SIGTERM stops all."""
    base = 20000 + free_port() % 20000
    state = tmp_path / "state"
    proc = python("-m", "kai_flows.cli", "coordinator", "--database-url", ledger_url, "--replicas", "2",
                  "--backend", "fake_runner:SubprocessRunner", "--state-dir", str(state), "--api-addr", "127.0.0.1",
                  "--metrics-addr", "127.0.0.1", "--api-port", str(base), "--metrics-port", str(base + 1),
                  "--poll-interval", "0.1", "--lease-seconds", "1", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  env={"KAI_API_TOKEN": ""})
    try:
        for port in (base, base + 2):
            wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        token = (state / "api-token").read_text().strip()
        assert (state / "api-token").stat().st_mode & 0o777 == 0o600
        with CoordinatorClient(f"http://127.0.0.1:{base + 2}", token) as client:
            job = client.submit("image-quality", {"images": "uploads/default/a/"})
            assert client.wait(job.id, timeout=30, poll=0.1).status == JobStatus.SUCCEEDED
        assert "kai_jobs_admitted_total" in httpx.get(f"http://127.0.0.1:{base + 1}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "replica 1: pid" in out and f"API http://127.0.0.1:{base + 2}" in out


def test_a_taken_port_is_one_line(ledger_url: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = python("-m", "kai_flows.cli", "coordinator", "--database-url", ledger_url, "--backend",
                      "fake_runner:SubprocessRunner", "--state-dir", str(tmp_path), "--api-addr", "127.0.0.1",
                      "--api-port", str(port), "--metrics-port", "0", env={"KAI_API_TOKEN": TOKEN},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1 and f"error: cannot serve the API on 127.0.0.1:{port}: Address already in use" in out
    assert "Traceback" not in out
