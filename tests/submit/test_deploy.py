"""`kai_flows.deploy`: rendering order, namespace retargeting, validation before any change, server-side apply.

The apply tests talk real HTTP to the stand-in server in fake_argo.py (discovery documents + PATCH with
`application/apply-patch+yaml`): they verify what the dynamic client sends (order, paths, field manager, force),
not how a real API server merges fields.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from fake_argo import FakeArgo, kubeconfig

from kai_flows.compile import cluster_manifests, render_documents
from kai_flows.deploy import DeployError, DeployOptions, component, deploy, render, required_secrets

ORDER = [
    ("infrastructure", "Namespace"), ("infrastructure", "ResourceQuota"), ("infrastructure", "LimitRange"),
    ("infrastructure", "PriorityClass"), ("infrastructure", "ServiceAccount"), ("infrastructure", "Role"),
    ("infrastructure", "RoleBinding"), ("infrastructure", "ConfigMap"), ("infrastructure", "NetworkPolicy"),
    ("coordinator", "ServiceAccount"), ("coordinator", "Role"), ("coordinator", "RoleBinding"),
    ("coordinator", "ConfigMap"), ("coordinator", "NetworkPolicy"), ("coordinator", "Job"), ("coordinator", "Service"),
    ("coordinator", "Deployment"), ("coordinator", "HorizontalPodAutoscaler"), ("coordinator", "PodDisruptionBudget"),
    ("coordinator", "ServiceMonitor"), ("coordinator", "PrometheusRule"),
    ("workflows", "WorkflowTemplate"),
]
COORDINATOR_SECRETS = {"kai-ledger-database": {"url"}, "kai-coordinator-api": {"token"},
                       "kai-s3-credentials": {"accessKey", "secretKey"}}


@pytest.fixture
def source(tmp_path: Path, fixture_dir: Path) -> Path:
    """A generated-YAML folder: the compiler's cluster manifests plus the fixture template."""
    root = tmp_path / "wt"
    (root / "cluster").mkdir(parents=True)
    for name, docs in cluster_manifests().items():
        (root / "cluster" / name).write_text(render_documents(docs))
    shutil.copy(fixture_dir / "image-quality.yaml", root / "image-quality.yaml")
    return root


@pytest.fixture
def images(tmp_path: Path) -> Path:
    (tmp_path / "images" / "quality").mkdir(parents=True)
    (tmp_path / "images" / "quality" / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (tmp_path / "images" / "coordinator").mkdir(parents=True)
    (tmp_path / "images" / "coordinator" / "Dockerfile").write_text("FROM python:3.11-slim\n")
    return tmp_path / "images"


def _kinds(manifests) -> list[str]:
    return list(dict.fromkeys(m.kind for m in manifests))


def _order(manifests) -> list[tuple[str, str]]:
    """(group, kind) of each run of objects, in apply order."""
    out: list[tuple[str, str]] = []
    for m in manifests:
        if not out or out[-1] != (component(m), m.kind):
            out.append((component(m), m.kind))
    return out


def _with_secrets(server: FakeArgo, namespace: str = "kai-ml") -> FakeArgo:
    server.secrets.update((namespace, name) for name in COORDINATOR_SECRETS)
    return server


def test_dry_run_renders_in_dependency_order(source: Path, images: Path) -> None:
    manifests = deploy(DeployOptions(source=source, images_dir=images, dry_run=True))
    assert _order(manifests) == ORDER
    assert len([m for m in manifests if m.kind == "PriorityClass"]) == 7
    assert {m.doc["metadata"]["name"] for m in manifests if m.kind == "ConfigMap"} >= {"kai-queues",
                                                                                      "artifact-repositories"}


def test_namespace_retargets_every_namespaced_object(source: Path, images: Path) -> None:
    before = {p: p.read_bytes() for p in source.rglob("*.yaml")}
    manifests = deploy(DeployOptions(source=source, images_dir=images, dry_run=True, namespace="kai-staging"))
    for m in manifests:
        meta = m.doc["metadata"]
        if m.kind == "Namespace":
            assert meta["name"] == "kai-staging"
        elif m.kind == "PriorityClass":
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == "kai-staging", m.label
        for subject in m.doc.get("subjects", []):
            assert subject["namespace"] == "kai-staging"
    assert {p: p.read_bytes() for p in source.rglob("*.yaml")} == before  # sources untouched


@pytest.mark.parametrize(("namespace", "why"), [
    ("Kai_ML", "is not a valid Kubernetes name"), ("kai-", "is not a valid Kubernetes name"),
    ("k" * 64, "is not a valid Kubernetes name"), ("kube-system", "belongs to the cluster itself"),
    ("default", "belongs to the cluster itself"),
])
def test_a_namespace_kubernetes_would_refuse_is_refused_by_dry_run(source: Path, images: Path, namespace: str,
                                                                   why: str) -> None:
    with pytest.raises(DeployError, match=f"namespace '{namespace}' {why}"):
        deploy(DeployOptions(source=source, images_dir=images, dry_run=True, namespace=namespace))


def test_skip_flags(source: Path, images: Path) -> None:
    def labels(**skip: bool) -> set[str]:
        return {m.label for m in deploy(DeployOptions(source=source, images_dir=images, dry_run=True, **skip))}

    everything = labels()
    infrastructure = labels(skip_coordinator=True, skip_workflows=True)
    coordinator = labels(skip_infrastructure=True, skip_workflows=True)  # the guide's "update only the coordinator"
    workflows = labels(skip_infrastructure=True, skip_coordinator=True)
    assert infrastructure | coordinator | workflows == everything
    assert not (infrastructure & coordinator) and not (coordinator & workflows) and not (infrastructure & workflows)
    assert workflows == {"WorkflowTemplate/image-quality -n kai-ml"}
    assert {"Namespace/kai-ml", "ResourceQuota/kai-flows -n kai-ml", "LimitRange/kai-flows -n kai-ml",
            "ServiceAccount/kai-step -n kai-ml", "NetworkPolicy/kai-steps -n kai-ml",
            "ConfigMap/artifact-repositories -n kai-ml"} <= infrastructure
    assert {label.split("/")[0] for label in coordinator} == {
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "NetworkPolicy", "Job", "Service", "Deployment",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"}
    assert {"ServiceAccount/kai-coordinator -n kai-ml", "ConfigMap/kai-coordinator-config -n kai-ml",
            "ConfigMap/kai-coordinator-dashboard -n kai-ml", "Deployment/kai-coordinator -n kai-ml"} <= coordinator
    assert labels(skip_infrastructure=True) == coordinator | workflows
    # The deprecated flags keep working: --skip-cluster is infrastructure and coordinator, --skip-templates workflows.
    assert labels(skip_cluster=True) == workflows
    assert labels(skip_templates=True) == infrastructure | coordinator
    with pytest.raises(DeployError, match="nothing to deploy"):
        deploy(DeployOptions(source=source, dry_run=True, skip_cluster=True, skip_templates=True))
    with pytest.raises(DeployError, match="nothing to deploy"):
        deploy(DeployOptions(source=source, dry_run=True, skip_infrastructure=True, skip_coordinator=True,
                             skip_workflows=True))


def test_invalid_manifest_stops_before_any_change(source: Path, images: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    doc = yaml.safe_load((source / "image-quality.yaml").read_text())
    doc["spec"]["templates"][1]["container"]["imagePullPolice"] = "Always"  # misspelt field
    (source / "image-quality.yaml").write_text(yaml.safe_dump(doc))
    pcs = source / "cluster" / "01-priority-classes.yaml"
    pcs.write_text(pcs.read_text().replace("value: 1000000", "value: high", 1))
    with FakeArgo() as server:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server.url, "s3cret")))
        with pytest.raises(DeployError) as e:
            deploy(DeployOptions(source=source, images_dir=images))
        assert server.applied == []
    message = str(e.value)
    assert message.startswith("2 problem(s) in the rendered manifests, nothing applied: "), message
    assert "image-quality.yaml: WorkflowTemplate/image-quality" in message and "imagePullPolice" in message
    assert "cluster/01-priority-classes.yaml: PriorityClass/system-critical" in message


def test_apply_server_side_in_order(source: Path, images: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with _with_secrets(FakeArgo(), "kai-staging") as server:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server.url, "s3cret")))
        seen = []
        manifests = deploy(DeployOptions(source=source, images_dir=images, namespace="kai-staging"),
                           on_applied=lambda m: seen.append(m.label))
    assert seen == [m.label for m in manifests]
    assert [a["body"]["kind"] for a in server.applied] == [m.kind for m in manifests]
    assert all(a["query"] == {"fieldManager": "kai-flows", "force": "true"} for a in server.applied)
    patches = [r for r in server.requests if r["method"] == "PATCH"]
    assert all(r["headers"]["Content-Type"] == "application/apply-patch+yaml" for r in patches)
    paths = [a["path"] for a in server.applied]
    assert paths[0] == "/api/v1/namespaces/kai-staging"
    assert "/apis/scheduling.k8s.io/v1/priorityclasses/medium-priority-batch" in paths
    assert "/api/v1/namespaces/kai-staging/configmaps/kai-queues" in paths
    assert paths[-1] == "/apis/argoproj.io/v1alpha1/namespaces/kai-staging/workflowtemplates/image-quality"


def test_missing_s3_secret_is_reported_with_the_command_that_creates_it(source: Path, images: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeArgo() as server:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server.url, "s3cret")))
        warnings: list[str] = []
        manifests = deploy(DeployOptions(source=source, images_dir=images, skip_coordinator=True),
                           on_warning=warnings.append)
        assert required_secrets(manifests) == {("kai-ml", "kai-s3-credentials"): {"accessKey", "secretKey"}}
        assert warnings == [
            "Secret kai-ml/kai-s3-credentials does not exist; workflows cannot reach their artifacts until it does: "
            "kubectl -n kai-ml create secret generic kai-s3-credentials --from-literal=accessKey=... "
            "--from-literal=secretKey=..."]
        server.secrets.add(("kai-ml", "kai-s3-credentials"))
        warnings.clear()
        deploy(DeployOptions(source=source, images_dir=images, skip_coordinator=True), on_warning=warnings.append)
        assert warnings == []
        server.secrets_forbidden = True  # a deployer without `get secrets`: a warning, not a traceback
        deploy(DeployOptions(source=source, images_dir=images, skip_coordinator=True), on_warning=warnings.append)
        assert warnings == ["could not check Secret kai-ml/kai-s3-credentials (keys accessKey, secretKey): HTTP 403; "
                            "make sure it exists"]


def test_cluster_without_argo_gets_nothing(source: Path, images: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeArgo(argo_crds=False) as server:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server.url, "s3cret")))
        with pytest.raises(DeployError, match="image-quality.yaml: the cluster serves no argoproj.io/v1alpha1 "
                                              r"WorkflowTemplate \(install Argo Workflows' CRDs first\)"):
            deploy(DeployOptions(source=source, images_dir=images))
        assert server.applied == []


def test_no_cluster_configured(source: Path, images: Path) -> None:
    with pytest.raises(DeployError, match="no cluster configured"):
        deploy(DeployOptions(source=source, images_dir=images))


def test_other_tag_compiles_afresh_and_leaves_committed_yaml(tmp_path: Path) -> None:
    from kai_flows.resources import templates_dir

    DEFAULT_TEMPLATES_DIR = templates_dir()

    if not list(DEFAULT_TEMPLATES_DIR.glob("*.yaml")):
        pytest.skip("no committed workflow_templates/*.yaml yet")
    before = {p: p.read_bytes() for p in DEFAULT_TEMPLATES_DIR.rglob("*.yaml")}
    manifests = render(DeployOptions(registry="acr.example.io/kai", tag="release-7"), tmp_path)
    images = {c["image"] for m in manifests if m.kind == "WorkflowTemplate"
              for t in m.doc["spec"]["templates"] if (c := t.get("container"))}
    assert images and all(i.startswith("acr.example.io/kai/") and i.endswith(":release-7") for i in images)
    assert {p: p.read_bytes() for p in DEFAULT_TEMPLATES_DIR.rglob("*.yaml")} == before


# ---------------------------------------------------------------------------------------------- the coordinator


def _deploy_with_server(server: FakeArgo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opts: DeployOptions,
                        **callbacks):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server.url, "s3cret")))
    return deploy(opts, **callbacks)


def _requests(server: FakeArgo, method: str, fragment: str) -> list[int]:
    """Positions in the server's request log of the requests with this method whose path holds `fragment`."""
    return [i for i, r in enumerate(server.requests) if r["method"] == method and fragment in r["path"]]


def test_deploy_waits_for_the_migration_job_before_the_coordinator(source: Path, images: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    running = {"active": 1, "startTime": "2026-12-01T00:00:00Z"}
    with _with_secrets(FakeArgo()) as server:
        server.job_statuses = [{}, running, running, {"succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True"}]}]
        events: list[str] = []
        applied = _deploy_with_server(server, tmp_path, monkeypatch,
                                      DeployOptions(source=source, images_dir=images, poll_interval=0.01),
                                      on_event=events.append)
        job = next(m for m in applied if m.kind == "Job")
        job_gets = _requests(server, "GET", f"/apis/batch/v1/namespaces/kai-ml/jobs/{job.doc['metadata']['name']}")
        [job_apply] = _requests(server, "PATCH", "/jobs/")
        [deployment_apply] = _requests(server, "PATCH", "/deployments/kai-coordinator")
    assert job.doc["metadata"]["name"].startswith("kai-coordinator-migrate-")
    assert len(job_gets) == 4  # it looked until the Job completed ...
    assert job_apply < job_gets[0] and job_gets[-1] < deployment_apply  # ... and only then rolled the coordinator
    assert [a["body"]["kind"] for a in server.applied] == [m.kind for m in applied]
    assert {m.kind for m in applied} >= {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler"}
    assert events[0] == f"waiting for {job.label} to complete (at most 660 s)"
    assert events[1].startswith(f"{job.label} complete after ")


def test_a_failed_migration_job_stops_the_deploy_naming_it(source: Path, images: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with _with_secrets(FakeArgo()) as server:
        server.job_statuses = [{"failed": 3, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]}]
        job_name = next(d for d in cluster_manifests()["11-coordinator-migrations.yaml"]
                        if d["kind"] == "Job")["metadata"]["name"]
        server.pods = [{"metadata": {"name": f"{job_name}-x7k2p", "namespace": "kai-ml",
                                     "labels": {"job-name": job_name}},
                        "status": {"containerStatuses": [{"name": "migrate", "state": {"terminated": {
                            "reason": "Error", "exitCode": 1, "message": "migration 004 failed: syntax error"}}}]}}]
        with pytest.raises(DeployError) as e:
            _deploy_with_server(server, tmp_path, monkeypatch, DeployOptions(source=source, images_dir=images))
        kinds = [a["body"]["kind"] for a in server.applied]
    message = str(e.value)
    assert message.startswith(f"cluster/11-coordinator-migrations.yaml: Job/{job_name} -n kai-ml failed "
                              "(BackoffLimitExceeded: Job has reached the specified backoff limit); pod "
                              f"{job_name}-x7k2p: Error (exit code 1): migration 004 failed: syntax error; "
                              "nothing after it was applied."), message
    assert f"kubectl -n kai-ml logs job/{job_name}" in message and f"delete job {job_name}" in message
    assert kinds[-1] == "Job" and "Deployment" not in kinds and "WorkflowTemplate" not in kinds
    assert "Namespace" in kinds  # the infrastructure before it stays applied


def test_a_migration_job_that_never_completes_times_out(source: Path, images: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with _with_secrets(FakeArgo()) as server:
        server.job_statuses = [{"active": 1}]
        job_name = next(d for d in cluster_manifests()["11-coordinator-migrations.yaml"]
                        if d["kind"] == "Job")["metadata"]["name"]
        server.pods = [{"metadata": {"name": f"{job_name}-abcde", "namespace": "kai-ml",
                                     "labels": {"job-name": job_name}},
                        "status": {"containerStatuses": [{"name": "migrate", "state": {"waiting": {
                            "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}]
        with pytest.raises(DeployError) as e:
            _deploy_with_server(server, tmp_path, monkeypatch, DeployOptions(
                source=source, images_dir=images, migration_timeout=0.5, poll_interval=0.05))
        assert "Deployment" not in [a["body"]["kind"] for a in server.applied]
    assert str(e.value).startswith(
        f"cluster/11-coordinator-migrations.yaml: Job/{job_name} -n kai-ml did not complete within 0 s; pod "
        f"{job_name}-abcde: ImagePullBackOff: Back-off pulling image; nothing after it was applied."), str(e.value)


def test_missing_coordinator_secrets_stop_the_deploy_before_the_job(source: Path, images: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeArgo() as server:
        server.secrets.add(("kai-ml", "kai-s3-credentials"))
        with pytest.raises(DeployError) as e:
            _deploy_with_server(server, tmp_path, monkeypatch, DeployOptions(source=source, images_dir=images))
        kinds = [a["body"]["kind"] for a in server.applied]
    message = str(e.value)
    assert "reads Secret(s) the cluster lacks: kai-ml/kai-ledger-database; its pods cannot start" in message
    assert "kubectl -n kai-ml create secret generic kai-ledger-database --from-literal=url=..." in message
    assert "Job" not in kinds and "Namespace" in kinds  # the namespace exists: the Secrets can be created now
    assert f"{len(kinds)} object(s) applied so far" in message


def test_without_the_prometheus_operator_its_objects_are_skipped_with_a_warning(
        source: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _with_secrets(FakeArgo(monitoring_crds=False)) as server:
        warnings: list[str] = []
        applied = _deploy_with_server(server, tmp_path, monkeypatch, DeployOptions(source=source, images_dir=images),
                                      on_warning=warnings.append)
        kinds = [a["body"]["kind"] for a in server.applied]
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    assert {"Deployment", "WorkflowTemplate"} <= set(kinds) and kinds == [m.kind for m in applied]
    assert warnings == [
        "the cluster serves no monitoring.coreos.com API (PrometheusRule, ServiceMonitor: the Prometheus Operator's "
        "CRDs are not installed); not applied: ServiceMonitor/kai-coordinator -n kai-ml, PrometheusRule/"
        "kai-coordinator -n kai-ml. Install the Prometheus Operator and deploy again to have Prometheus scrape and "
        "alert"]


def test_a_redeploy_keeps_the_replica_count_the_autoscaler_chose(source: Path, images: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/apis/apps/v1/namespaces/kai-ml/deployments/kai-coordinator"
    opts = DeployOptions(source=source, images_dir=images, skip_infrastructure=True, skip_workflows=True)
    with _with_secrets(FakeArgo()) as server:
        _deploy_with_server(server, tmp_path, monkeypatch, opts)
        first = next(a["body"] for a in server.applied if a["path"] == path)
        server.live[path] = {**first, "spec": {**first["spec"], "replicas": 7}}  # the HPA scaled it to 7
        server.applied.clear()
        _deploy_with_server(server, tmp_path, monkeypatch, opts)
        second = next(a["body"] for a in server.applied if a["path"] == path)
    assert first["spec"]["replicas"] == 3  # created with the guide's three
    assert second["spec"]["replicas"] == 7  # not reset to 3 under the HPA
    assert server.applied[0]["body"]["kind"] == "ServiceAccount"  # coordinator only: no Namespace


def test_another_namespace_moves_the_config_and_alerts_and_rolls_the_deployment(source: Path, images: Path) -> None:
    from kai_flows.cluster.coordinator import CHECKSUM_ANNOTATION, config_checksum

    committed = {m.label.split(" -n ")[0]: m.doc for m in deploy(DeployOptions(
        source=source, images_dir=images, dry_run=True, skip_infrastructure=True, skip_workflows=True))}
    staged = {m.label.split(" -n ")[0]: m.doc for m in deploy(DeployOptions(
        source=source, images_dir=images, dry_run=True, skip_infrastructure=True, skip_workflows=True,
        namespace="kai-staging"))}
    config = staged["ConfigMap/kai-coordinator-config"]
    assert yaml.safe_load(config["data"]["coordinator.yaml"])["namespace"] == "kai-staging"
    exprs = [r["expr"] for g in staged["PrometheusRule/kai-coordinator"]["spec"]["groups"] for r in g["rules"]]
    assert any('namespace="kai-staging"' in e for e in exprs) and not any('namespace="kai-ml"' in e for e in exprs)
    checksum = staged["Deployment/kai-coordinator"]["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    assert checksum == config_checksum(config["data"])
    assert checksum != committed["Deployment/kai-coordinator"]["spec"]["template"]["metadata"]["annotations"][
        CHECKSUM_ANNOTATION]


def test_database_addresses_reach_the_coordinators_network_policies(tmp_path: Path) -> None:
    manifests = render(DeployOptions(database_cidrs=("10.20.0.0/16",), skip_infrastructure=True,
                                     skip_workflows=True), tmp_path)  # another setting: compiled afresh
    policies = {m.doc["metadata"]["name"]: m.doc["spec"] for m in manifests if m.kind == "NetworkPolicy"}
    for name in ("kai-coordinator", "kai-coordinator-migrate"):
        [database] = [r for r in policies[name]["egress"] if r["ports"] == [{"protocol": "TCP", "port": 5432}]]
        assert database["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}], name
