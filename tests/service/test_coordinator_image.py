"""The coordinator image as the cluster runs it (read-only root, uid 1000, /tmp an emptyDir): its `kai-flows
migrate` migrates a real PostgreSQL, its `kai-flows coordinator --backend argo` serves the API and turns a job
submitted through it into a Workflow on the Argo stand-in (tests/submit/fake_argo.py), followed and cancelled.
Needs `make images` (`make test-images` runs it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kai_flows.compile import image_ref
from kai_flows.ledger import jobs
from kai_flows.ledger.migrate import status as migration_status
from kai_flows.ledger.models import JobStatus
from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG
from kai_flows.service import CoordinatorClient
from kai_flows.store import EmbeddedSeaweedFS
from tests.service.conftest import TOKEN, free_port, wait_http

IMAGE = image_ref("coordinator", DEFAULT_REGISTRY, DEFAULT_TAG)
SUBMIT_TESTS = Path(__file__).resolve().parents[1] / "submit"


def _engine():  # type: ignore[no-untyped-def]
    from kai_flows.containers import ContainerEngineError, find_engine

    try:
        engine = find_engine()
        return engine if engine.image_exists(IMAGE) else None
    except ContainerEngineError:
        return None


pytestmark = [pytest.mark.images, pytest.mark.skipif(_engine() is None, reason=f"needs {IMAGE}: run `make images`")]


def test_the_image_migrates_serves_submits_and_cancels(database_url: str, tmp_path: Path) -> None:
    sys.path.insert(0, str(SUBMIT_TESTS))
    from fake_argo import FakeArgo

    engine = _engine()
    pod = ["run", "--rm", *engine.run_args(), "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--user", "1000:1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    if engine.kind == "podman":
        pod += ["--read-only-tmpfs=false"]
    migrated = engine.run(*pod, "-e", f"KAI_DATABASE_URL={database_url}", IMAGE, "migrate", timeout=120)
    assert "4 applied" in migrated.stdout, migrated.stdout + migrated.stderr
    assert {s.state for s in migration_status(database_url)} == {"applied"}

    running = {"phase": "Running", "nodes": {"n1": {"id": "n1", "name": "wf.a", "displayName": "a", "type": "Pod",
                                                     "templateName": "t", "phase": "Running"}}}
    api_port, metrics_port = free_port(), free_port()
    with FakeArgo(token="s3cret") as argo, EmbeddedSeaweedFS(tmp_path / "s3") as s3:
        argo.add_template(yaml.safe_load((SUBMIT_TESTS / "fixtures" / "image-quality.yaml").read_text()))
        argo.script_on_create = [running] * 10_000
        env = {"KAI_DATABASE_URL": database_url, "KAI_API_TOKEN": TOKEN, "KAI_CLAIMER": "coordinator-pod-0",
               "KAI_ARGO_SERVER": argo.url, "KAI_ARGO_TOKEN": "s3cret", **s3.config().to_env()}
        name = f"kai-coordinator-test-{api_port}"
        args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        started = subprocess.run(engine.command(*pod[:1], "-d", "--name", name, *pod[2:], *args, IMAGE, "coordinator",
                                 "--backend", "argo", "--api-addr", "127.0.0.1", "--api-port", str(api_port),
                                 "--metrics-addr", "127.0.0.1", "--metrics-port", str(metrics_port),
                                 "--poll-interval", "0.2", "--lease-seconds", "5"),
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        try:
            wait_http(f"http://127.0.0.1:{api_port}/readyz", timeout=60)
            with CoordinatorClient(f"http://127.0.0.1:{api_port}", TOKEN) as client:
                job = client.submit("image-quality", {"images": "uploads/default/shoot/"}, idempotency_key="s1")
                deadline = time.monotonic() + 60
                while client.get(job.id).status != JobStatus.RUNNING:
                    assert time.monotonic() < deadline, engine.run("logs", name, check=False).stderr
                    time.sleep(0.2)
                assert [wf["metadata"]["labels"]["kai-flows.io/job-id"] for wf in argo.workflows.values()] == [
                    str(job.id)]
                assert client.cancel(job.id).status == JobStatus.CANCELLED
                deadline = time.monotonic() + 30
                while not any(r["method"] == "PUT" and r["path"].endswith("/terminate") for r in argo.requests):
                    assert time.monotonic() < deadline, "the coordinator in the image never terminated the workflow"
                    time.sleep(0.2)
            import httpx

            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert 'kai_jobs_admitted_total{queue_class="batch"} 1.0' in metrics
        finally:
            engine.run("stop", "-t", "10", name, check=False)
            engine.run("rm", "-f", name, check=False)
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.row_factory = psycopg.rows.dict_row
        assert [h.actor for h in jobs.history(conn, job.id)][1] == "coordinator-pod-0"
