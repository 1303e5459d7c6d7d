"""The REST (Hera WorkflowsService) and Kubernetes-client paths, over real HTTP to the local stand-in server.

See fake_argo.py for what this does and does not verify: the clients' real requests (paths, methods, query
strings, Bearer token, JSON bodies) and response parsing are exercised; Argo's controller is not (the test
scripts the status it reports). The request bodies on the wire are validated against Argo's swagger here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_argo import FakeArgo, kubeconfig
from schemas import errors, schema_validator, swagger_validator

from kai_flows.submit import (
    KubeBackend,
    RestBackend,
    SubmitError,
    SubmitRequest,
    Submitter,
    WaitTimeout,
    backend_from_env,
)
from kai_flows.submit.backends import kube_api_client

SWAGGER = "io.argoproj.workflow.v1alpha1."

RUNNING = {"phase": "Running", "nodes": {
    "n0": {"id": "n0", "name": "wf", "displayName": "wf", "type": "DAG", "templateName": "main", "phase": "Running"},
    "n1": {"id": "n1", "name": "wf.aggregate", "displayName": "aggregate", "type": "Pod",
           "templateName": "aggregate-quality", "phase": "Running"}}}
SUCCEEDED = {
    "phase": "Succeeded", "startedAt": "2026-11-28T04:00:00Z", "finishedAt": "2026-11-28T04:01:00Z",
    "progress": "1/1",
    "artifactRepositoryRef": {"configMap": "artifact-repositories", "key": "kai-s3",
                              "artifactRepository": {"s3": {"bucket": "kai-artifacts", "endpoint": "minio:9000"}}},
    "nodes": {
        "n0": {"id": "n0", "name": "wf", "displayName": "wf", "type": "DAG", "templateName": "main",
               "phase": "Succeeded"},
        "n1": {"id": "n1", "name": "wf.aggregate", "displayName": "aggregate", "type": "Pod",
               "templateName": "aggregate-quality", "phase": "Succeeded",
               "outputs": {"artifacts": [{"name": "report", "path": "/tmp/kai/outputs/artifacts/report",
                                          "s3": {"key": "wf/wf-aggregate-quality-1/report"}}]}},
        "n2": {"id": "n2", "name": "wf.enhance", "displayName": "enhance", "type": "Skipped", "phase": "Skipped"}}}


@pytest.fixture
def server(quality_template: dict):
    with FakeArgo(token="s3cret") as fake:
        fake.add_template(quality_template)
        yield fake


def _rest(server: FakeArgo, tmp_path: Path) -> Submitter:
    # templates_dir has no template: the template is read from the server, as when nothing is committed
    return Submitter(RestBackend(server.url, "s3cret"), templates_dir=tmp_path)


def _kube(server: FakeArgo, tmp_path: Path) -> Submitter:
    api_client, desc = kube_api_client(config_file=str(kubeconfig(tmp_path / "kubeconfig", server.url, "s3cret")))
    return Submitter(KubeBackend(api_client, desc), templates_dir=tmp_path)


REQ = SubmitRequest(pipeline="image-quality", parameters={"images": "uploads/default/job-7/"}, tier="enterprise",
                    job_id="job-7")


@pytest.mark.parametrize("make", [_rest, _kube], ids=["rest", "kube"])
def test_submit_find_wait_outputs(server: FakeArgo, tmp_path: Path, make) -> None:
    sub = make(server, tmp_path)
    name = sub.submit(REQ)
    assert name.startswith("image-quality-")
    stored = server.workflows[("kai-ml", name)]
    assert stored["spec"]["workflowTemplateRef"] == {"name": "image-quality"}
    assert stored["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] == "interactive"
    assert stored["metadata"]["labels"]["kai-flows.io/job-id"] == "job-7"
    assert errors(schema_validator(), {k: v for k, v in stored.items() if k != "status"}) == []

    found = sub.find("job-7")
    assert [w.name for w in found] == [name]
    assert sub.find("job-unknown") == []

    server.scripts[name] = [{}, RUNNING, RUNNING, SUCCEEDED]
    seen = []
    status = sub.wait(name, timeout=30, poll=0.01, on_update=lambda s: seen.append(s.phase))
    assert seen == ["", "Running", "Running", "Succeeded"]
    assert status.phase == "Succeeded" and status.done
    assert status.node_phases == {"wf": "Succeeded", "aggregate": "Succeeded", "enhance": "Skipped"}
    [art] = status.artifacts
    assert (art.task, art.name, art.bucket, art.key) == ("aggregate", "report", "kai-artifacts",
                                                         "wf/wf-aggregate-quality-1/report")
    assert status.outputs({"report": "aggregate.report"}) == {"report": art}

    # submitting the same job again finds the workflow instead of creating a second one
    assert sub.submit(REQ) == name
    assert len(server.workflows) == 1


@pytest.mark.parametrize("make", [_rest, _kube], ids=["rest", "kube"])
@pytest.mark.parametrize("terminate", [True, False])
def test_cancel(server: FakeArgo, tmp_path: Path, make, terminate: bool) -> None:
    sub = make(server, tmp_path)
    name = sub.submit(REQ)
    sub.cancel(name, terminate=terminate)
    mode = "Terminate" if terminate else "Stop"
    assert server.workflows[("kai-ml", name)]["spec"]["shutdown"] == mode
    assert sub.status(name).phase == "Failed"
    with pytest.raises(SubmitError, match="no workflow 'image-quality-missing' in namespace 'kai-ml'"):
        sub.cancel("image-quality-missing")


def test_rest_requests_on_the_wire_match_the_swagger(server: FakeArgo, tmp_path: Path) -> None:
    sub = _rest(server, tmp_path)
    name = sub.submit(REQ, idempotent=False)
    sub.cancel(name, terminate=True)
    sub.cancel(name, terminate=False)
    sent = {(r["method"], r["path"].removeprefix(f"/api/v1/workflows/kai-ml/{name}/")): r for r in server.requests}
    assert all(r["headers"]["Authorization"] == "Bearer s3cret" for r in server.requests)
    create = sent[("POST", "/api/v1/workflows/kai-ml")]
    assert create["headers"]["Content-Type"] == "application/json"
    assert errors(swagger_validator(SWAGGER + "WorkflowCreateRequest"), create["body"]) == []
    assert create["body"]["workflow"]["spec"]["podPriorityClassName"] == "high-priority-batch"
    assert errors(swagger_validator(SWAGGER + "WorkflowTerminateRequest"), sent[("PUT", "terminate")]["body"]) == []
    assert errors(swagger_validator(SWAGGER + "WorkflowStopRequest"), sent[("PUT", "stop")]["body"]) == []
    sub.find("job-7")
    listing = next(r for r in server.requests if r["method"] == "GET" and r["path"] == "/api/v1/workflows/kai-ml")
    assert listing["query"]["listOptions.labelSelector"] == "kai-flows.io/job-id=job-7"
    templ = next(r for r in server.requests if r["path"].startswith("/api/v1/workflow-templates/"))
    assert templ["path"] == "/api/v1/workflow-templates/kai-ml/image-quality"


def test_rest_bad_parameter_makes_no_create_call(server: FakeArgo, tmp_path: Path) -> None:
    sub = _rest(server, tmp_path)
    with pytest.raises(SubmitError, match="declares no parameter 'colour'"):
        sub.submit(SubmitRequest(pipeline="image-quality",
                                 parameters={"images": "uploads/default/k/", "colour": "red"}))
    assert not [r for r in server.requests if r["method"] == "POST"]
    with pytest.raises(SubmitError, match="unknown pipeline 'missing': no WorkflowTemplate of that name in 'kai-ml'"):
        sub.submit(SubmitRequest(pipeline="missing"))


def test_wait_times_out_naming_the_workflow(server: FakeArgo, tmp_path: Path) -> None:
    sub = _rest(server, tmp_path)
    name = sub.submit(REQ)
    server.scripts[name] = [RUNNING] * 1000
    with pytest.raises(WaitTimeout, match=f"workflow {name} still Running after the timeout"):
        sub.wait(name, timeout=0.2, poll=0.02)


def test_wait_with_rich_progress(server: FakeArgo, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sub = _rest(server, tmp_path)
    name = sub.submit(REQ)
    server.scripts[name] = [RUNNING, SUCCEEDED]
    assert sub.wait(name, timeout=10, poll=0.01, progress=True).phase == "Succeeded"
    assert f"{name} Succeeded" in capsys.readouterr().err


def test_wrong_token_and_unreachable_server(server: FakeArgo, tmp_path: Path) -> None:
    bad = Submitter(RestBackend(server.url, "wrong"), templates_dir=tmp_path)
    with pytest.raises(SubmitError, match=r"Argo Server http://127\.0\.0\.1:\d+/: get workflow x failed: .*401.*"
                                          "token not valid"):
        bad.status("x")
    gone = Submitter(RestBackend("http://127.0.0.1:9", "t"), templates_dir=tmp_path)
    with pytest.raises(SubmitError, match=r"cannot reach Argo Server http://127\.0\.0\.1:9/ \(get workflow x\)"):
        gone.status("x")
    with pytest.raises(SubmitError, match="must start with http:// or https://"):
        RestBackend("argo.example.com:2746")


def test_kube_wrong_token(server: FakeArgo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server.url, "wrong")))
    sub = Submitter(backend_from_env(), templates_dir=tmp_path)
    assert isinstance(sub.backend, KubeBackend)
    with pytest.raises(SubmitError, match=r"Kubernetes API \(.*kc\): get workflow x failed: HTTP 401"):
        sub.status("x")


def test_backend_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="no cluster configured: set KAI_ARGO_SERVER"):
        backend_from_env()
    monkeypatch.setenv("KAI_ARGO_SERVER", "https://argo.example.com:2746")
    monkeypatch.setenv("KAI_ARGO_TOKEN", "abc")
    backend = backend_from_env()
    assert isinstance(backend, RestBackend)
    assert backend.service.token == "Bearer abc"
    monkeypatch.delenv("KAI_ARGO_SERVER")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", "https://k8s.example.com", "t")))
    with pytest.raises(SubmitError, match="kubeconfig .*kc: .*nope"):
        backend_from_env(context="nope")
