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
from kai_flows.deploy import DeployError, DeployOptions, deploy, render, required_secrets

ORDER = ["Namespace", "PriorityClass", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "NetworkPolicy",
         "WorkflowTemplate"]


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
    return tmp_path / "images"


def _kinds(manifests) -> list[str]:
    return list(dict.fromkeys(m.kind for m in manifests))


def test_dry_run_renders_in_dependency_order(source: Path, images: Path) -> None:
    manifests = deploy(DeployOptions(source=source, images_dir=images, dry_run=True))
    assert _kinds(manifests) == ORDER
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
    only_templates = deploy(DeployOptions(source=source, images_dir=images, dry_run=True, skip_cluster=True))
    assert _kinds(only_templates) == ["WorkflowTemplate"]
    only_cluster = deploy(DeployOptions(source=source, images_dir=images, dry_run=True, skip_templates=True))
    assert "WorkflowTemplate" not in _kinds(only_cluster)
    with pytest.raises(DeployError, match="nothing to deploy"):
        deploy(DeployOptions(source=source, dry_run=True, skip_cluster=True, skip_templates=True))


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
    with FakeArgo() as server:
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
        manifests = deploy(DeployOptions(source=source, images_dir=images), on_warning=warnings.append)
        assert required_secrets(manifests) == {("kai-ml", "kai-s3-credentials"): {"accessKey", "secretKey"}}
        assert warnings == [
            "Secret kai-ml/kai-s3-credentials does not exist; workflows cannot reach their artifacts until it does: "
            "kubectl -n kai-ml create secret generic kai-s3-credentials --from-literal=accessKey=... "
            "--from-literal=secretKey=..."]
        server.secrets.add(("kai-ml", "kai-s3-credentials"))
        warnings.clear()
        deploy(DeployOptions(source=source, images_dir=images), on_warning=warnings.append)
        assert warnings == []
        server.secrets_forbidden = True  # a deployer without `get secrets`: a warning, not a traceback
        deploy(DeployOptions(source=source, images_dir=images), on_warning=warnings.append)
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
