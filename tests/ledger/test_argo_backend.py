"""The `argo` coordinator backend over real HTTP to the local Argo stand-in (tests/submit/fake_argo.py), the real
PostgreSQL ledger and a real SeaweedFS holding the workflow's output objects.

What this verifies: the coordinator's jobs become the Workflows the Submitter builds (queue semaphore, priority,
tier, job-id and attempt labels, a deterministic name, the input key as a parameter), sent as real REST / Kubernetes
API requests whose bodies match Argo's swagger and schema; phases are mapped; a workflow is found again by its
labels instead of being created twice; cancel reaches the server; outputs are hashed from real S3 objects.
What it does NOT verify: anything the Argo controller does (the test scripts the statuses the stand-in returns),
nor that a real server refuses a second create of the same name (the stand-in does not check names).
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from minio import Minio

SUBMIT_TESTS = Path(__file__).resolve().parents[1] / "submit"
sys.path.insert(0, str(SUBMIT_TESTS))

from fake_argo import FakeArgo, kubeconfig  # noqa: E402
from schemas import errors, schema_validator, swagger_validator  # noqa: E402

from kai_flows.ledger import jobs  # noqa: E402
from kai_flows.ledger.argo_backend import ATTEMPT_LABEL, ArgoBackend  # noqa: E402
from kai_flows.ledger.coordinator import Coordinator  # noqa: E402
from kai_flows.ledger.errors import BackendError, WorkflowNotFound  # noqa: E402
from kai_flows.ledger.models import TERMINAL, JobStatus  # noqa: E402
from kai_flows.policy import parse_task_queue_config  # noqa: E402
from kai_flows.store import EmbeddedSeaweedFS  # noqa: E402
from kai_flows.submit import JOB_ID_LABEL, KubeBackend, RestBackend, Submitter  # noqa: E402
from kai_flows.submit.backends import kube_api_client  # noqa: E402

QUEUES = parse_task_queue_config('{"interactive": {"concurrency": 2, "weight": 10}, "batch": {"concurrency": 1, '
                                 '"weight": 5}, "maintenance": {"concurrency": 1, "weight": 1}}')
TEMPLATE = yaml.safe_load((SUBMIT_TESTS / "fixtures" / "image-quality.yaml").read_text())
REPORT_KEY = "runs/wf-1/aggregate/report"
FILES = {"quality.json": b'{"verdict": "accept"}', "contact_sheet.png": b"\x89PNG fake bytes" * 100}


def node(phase: str, **extra: object) -> dict:
    return {"id": "n1", "name": "wf.aggregate", "displayName": "aggregate", "type": "Pod",
            "templateName": "aggregate-quality", "phase": phase, **extra}


RUNNING = {"phase": "Running", "nodes": {"n1": node("Running")}}
SUCCEEDED = {"phase": "Succeeded", "artifactRepositoryRef": {"artifactRepository": {"s3": {"bucket": "kai-artifacts"}}},
             "nodes": {"n1": node("Succeeded", outputs={"artifacts": [{"name": "report", "s3": {"key": REPORT_KEY}}]})}}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweedFS]:
    with EmbeddedSeaweedFS(tmp_path_factory.mktemp("seaweed")) as server:
        server.store()  # creates the bucket
        c = server.config()
        minio = Minio(c.endpoint, access_key=c.access_key, secret_key=c.secret_key, secure=False, region=c.region)
        for name, data in FILES.items():  # a folder artifact stored with archive: none, one object per file
            minio.put_object(c.bucket, f"{REPORT_KEY}/{name}", io.BytesIO(data), len(data))
        yield server


@pytest.fixture
def server() -> Iterator[FakeArgo]:
    with FakeArgo(token="s3cret") as fake:
        fake.add_template(TEMPLATE)
        yield fake


def rest(server: FakeArgo, tmp_path: Path) -> Submitter:
    return Submitter(RestBackend(server.url, "s3cret"), templates_dir=tmp_path)  # no local template: the server's


def kube(server: FakeArgo, tmp_path: Path) -> Submitter:
    api_client, desc = kube_api_client(config_file=str(kubeconfig(tmp_path / "kubeconfig", server.url, "s3cret")))
    return Submitter(KubeBackend(api_client, desc), templates_dir=tmp_path)


def run_until_done(c: Coordinator, conn, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not all(j.status in TERMINAL for j in jobs.list_jobs(conn)):
        assert time.monotonic() < deadline, "timed out"
        c.run_once()


@pytest.mark.parametrize("make", [rest, kube], ids=["rest", "kube"])
def test_coordinator_submits_follows_and_records_outputs(make, server: FakeArgo, s3: EmbeddedSeaweedFS,
                                                         ledger_url: str, conn, tmp_path: Path) -> None:
    server.script_on_create = [{}, RUNNING, SUCCEEDED]
    job = jobs.enqueue(conn, "image-quality", {"max_blur": 5}, tier="enterprise", queue_class="batch",
                       input_uri="s3://kai-artifacts/uploads/default/job-7/")
    c = Coordinator(ledger_url, ArgoBackend(make(server, tmp_path), s3.config()), QUEUES, 0.05, claimer="c1")
    run_until_done(c, conn)
    c.close()

    name = f"job-{job.id}-0"
    assert jobs.get_job(conn, job.id).error is None, jobs.get_job(conn, job.id).error
    [(ns, created)] = server.workflows
    wf = server.workflows[(ns, created)]
    assert created == name and wf["metadata"]["labels"][JOB_ID_LABEL] == str(job.id)
    assert wf["metadata"]["labels"][ATTEMPT_LABEL] == "0"
    assert wf["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] == "batch"
    assert wf["spec"]["priority"] == 5 and wf["spec"]["podPriorityClassName"]
    assert {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]} == {
        "images": "uploads/default/job-7/", "max_blur": "5"}
    assert errors(schema_validator(), {k: v for k, v in wf.items() if k != "status"}) == []
    posted = [r["body"] for r in server.requests if r["method"] == "POST"]
    if make is rest:
        assert errors(swagger_validator("io.argoproj.workflow.v1alpha1.WorkflowCreateRequest"), posted[0]) == []

    final = jobs.get_job(conn, job.id)
    assert (final.status, final.workflow_name) == (JobStatus.SUCCEEDED, name)
    assert [h.to_status for h in jobs.history(conn, job.id)] == ["queued", "submitted", "running", "succeeded"]
    recorded = {o.uri: (o.sha256, o.size) for o in jobs.outputs(conn, job.id)}
    assert recorded == {f"s3://kai-artifacts/{REPORT_KEY}/{n}": (hashlib.sha256(d).hexdigest(), len(d))
                        for n, d in FILES.items()}


def test_found_by_label_not_created_twice_and_attempts_are_distinct(server: FakeArgo, s3: EmbeddedSeaweedFS,
                                                                    conn, tmp_path: Path) -> None:
    job = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/a/"}, tier="pro", queue_class="interactive")
    first = ArgoBackend(rest(server, tmp_path), s3.config())
    name = first.submit(job)
    restarted = ArgoBackend(rest(server, tmp_path), s3.config())  # a new coordinator after a crash
    assert restarted.find_by_label(job.id, 0) == name
    assert restarted.submit(job) == name and len(server.workflows) == 1
    assert restarted.find_by_label(job.id, 1) is None
    retry = type(job)(**{**job.__dict__, "attempts": 1})
    assert restarted.submit(retry) == f"job-{job.id}-1" and len(server.workflows) == 2
    assert restarted.status(name).phase == "Pending"  # no phase yet: the controller has not picked it up


def test_cancel_terminates_and_phase_maps_to_failed(server: FakeArgo, s3: EmbeddedSeaweedFS, ledger_url: str, conn,
                                                   tmp_path: Path) -> None:
    server.script_on_create = [RUNNING] * 1000
    job = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/a/"}, tier="pro", queue_class="interactive")
    c = Coordinator(ledger_url, ArgoBackend(rest(server, tmp_path), s3.config()), QUEUES, 0.05, claimer="c1")
    while jobs.get_job(conn, job.id).status != JobStatus.RUNNING:
        c.run_once()
    jobs.cancel(conn, job.id, actor="operator", reason="user cancelled")
    server.scripts.clear()
    c.run_once()
    c.close()
    name = f"job-{job.id}-0"
    assert any(r["method"] == "PUT" and r["path"].endswith(f"/{name}/terminate") for r in server.requests)
    assert ArgoBackend(rest(server, tmp_path), s3.config()).status(name).phase == "Failed"
    assert jobs.get_job(conn, job.id).status == JobStatus.CANCELLED


def test_refused_jobs_fail_with_the_reason_and_a_deleted_workflow_is_an_error(
        server: FakeArgo, s3: EmbeddedSeaweedFS, ledger_url: str, conn, tmp_path: Path) -> None:
    bad_param = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/a/", "nope": 1}, tier="pro",
                             queue_class="batch")
    no_pipeline = jobs.enqueue(conn, "no-such-pipeline", {}, tier="pro", queue_class="interactive")
    # tenants sharing the bucket: another tenant's upload, another workflow's artifacts
    foreign_upload = jobs.enqueue(conn, "image-quality", {"images": "uploads/bob/a/"}, tier="pro",
                                  queue_class="batch", tenant="acme")
    foreign_artifact = jobs.enqueue(conn, "image-quality", {}, tier="pro", queue_class="batch", tenant="acme",
                                    input_uri="s3://kai-artifacts/image-quality-x1y2z/image-quality-x1y2z-123/report")
    c = Coordinator(ledger_url, ArgoBackend(rest(server, tmp_path), s3.config()), QUEUES, 0.05, claimer="c1")
    run_until_done(c, conn)
    c.close()
    assert jobs.get_job(conn, bad_param.id).error == (
        "submission failed: pipeline 'image-quality' declares no parameter 'nope' "
        "(declared: images, max_blur, quality)")
    assert jobs.get_job(conn, no_pipeline.id).error.startswith(
        "submission failed: unknown pipeline 'no-such-pipeline': no WorkflowTemplate of that name")
    outside = ("is outside what tenant 'acme' may read (uploads/acme/); a job reads only its own tenant's uploads")
    assert jobs.get_job(conn, foreign_upload.id).error == (
        "submission failed: pipeline 'image-quality': parameter 'images' carries the S3 key of input 'images': "
        "key 'uploads/bob/a/' " + outside)
    assert jobs.get_job(conn, foreign_artifact.id).error == (
        "submission failed: pipeline 'image-quality': parameter 'images' carries the S3 key of input 'images': "
        "key 'image-quality-x1y2z/image-quality-x1y2z-123/report' " + outside)
    assert server.workflows == {}
    with pytest.raises(WorkflowNotFound, match="no workflow 'gone'"):
        ArgoBackend(rest(server, tmp_path), s3.config()).status("gone")


@pytest.mark.parametrize("make", [rest, kube], ids=["rest", "kube"])
def test_server_errors_on_create_are_retried_and_refusals_are_not(make, server: FakeArgo, s3: EmbeddedSeaweedFS,
                                                                  ledger_url: str, conn, tmp_path: Path) -> None:
    server.create_errors = [503, 500, 502]  # a proxy in front of the server, then the server itself, then a proxy
    server.script_on_create = [RUNNING, SUCCEEDED]
    flaky = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/a/"}, tier="pro", queue_class="interactive")
    c = Coordinator(ledger_url, ArgoBackend(make(server, tmp_path), s3.config()), QUEUES, 0.05, claimer="c1")
    run_until_done(c, conn)
    done = jobs.get_job(conn, flaky.id)
    assert (done.status, done.error) == (JobStatus.SUCCEEDED, None)
    assert len(server.workflows) == 1 and server.create_errors == []
    assert [h.to_status for h in jobs.history(conn, flaky.id)] == ["queued", "submitted", "running", "succeeded"]

    for code in (403, 422):  # RBAC or validation refuses the create: retrying cannot help
        server.create_errors = [code]
        refused = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/b/"}, tier="pro",
                               queue_class="interactive")
        run_until_done(c, conn)
        failed = jobs.get_job(conn, refused.id)
        assert failed.status == JobStatus.FAILED, failed.error
        assert re.search(rf"^submission failed: .*create workflow failed: .*{code}.*scripted HTTP {code}", failed.error)
    c.close()
    assert len(server.workflows) == 1


def test_from_env_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAI_S3_ENDPOINT", "KAI_ARGO_SERVER", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BackendError, match="set KAI_S3_ENDPOINT"):
        ArgoBackend.from_env()
    monkeypatch.setenv("KAI_S3_ENDPOINT", "127.0.0.1:9")
    for var, value in (("KAI_S3_ACCESS_KEY", "a"), ("KAI_S3_SECRET_KEY", "b"), ("KAI_S3_BUCKET", "kai-artifacts")):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    with pytest.raises(BackendError, match="no cluster configured"):
        ArgoBackend.from_env()


def test_unschedulable_pods_hold_their_queue_class(server: FakeArgo, s3: EmbeddedSeaweedFS, ledger_url: str, conn,
                                                   tmp_path: Path) -> None:
    """Back-pressure from what Argo reports: a Pending pod node whose message is the scheduler's Unschedulable
    condition (operator.go getPendingReason) for longer than the grace holds admission of its class only."""
    from kai_flows.ledger import holds

    why = "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    pending = {"phase": "Running", "nodes": {"n1": node("Pending", message=why, startedAt="2026-01-01T00:00:00Z")}}
    server.script_on_create = [pending] * 1000
    first = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/a/"}, tier="pro", queue_class="interactive")
    c = Coordinator(ledger_url, ArgoBackend(rest(server, tmp_path), s3.config()), QUEUES, 0.05, claimer="c1",
                    unschedulable_after=60)
    c.run_once()  # admits and submits the first job
    c.run_once()  # reads its status: unschedulable since long ago -> interactive held
    second = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/b/"}, tier="pro",
                          queue_class="interactive")
    other = jobs.enqueue(conn, "image-quality", {"images": "uploads/default/c/"}, tier="pro", queue_class="batch")
    c.run_once()
    assert jobs.get_job(conn, second.id).status == JobStatus.QUEUED  # interactive has room (2) but is held
    assert jobs.get_job(conn, other.id).status != JobStatus.QUEUED  # batch is not held
    [hold] = holds.active_holds(conn)["interactive"]
    assert hold.reason == "unschedulable" and hold.detail == f"workflow job-{first.id}-0: aggregate: {why}"
    held = {s.labels["reason"]: s.value for m in c.metrics.registry.collect() if m.name == "kai_admission_held"
            for s in m.samples if s.labels["queue_class"] == "interactive"}
    assert held == {"unschedulable": 1, "backend_refused": 0}
    server.scripts.clear()
    server.script_on_create = [RUNNING] * 1000
    server.scripts[f"job-{first.id}-0"] = [RUNNING] * 1000  # a node freed up: the pod is placed
    c.run_once()
    c.run_once()
    c.close()
    assert holds.active_holds(conn).get("interactive") is None
    assert jobs.get_job(conn, second.id).status != JobStatus.QUEUED
