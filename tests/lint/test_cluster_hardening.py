"""The cluster hardening of issue 11 item 4, one behaviour per letter, each also enforced by `kai-flows lint`:
(a) images pinned by registry digest, never `latest`; (b) a default-deny NetworkPolicy for step pods; (c) Pod
Security `restricted` on the namespace, which every compiled pod satisfies; (d) a sizeLimit on every emptyDir;
(e) the artifact repository over TLS unless opted out by name; (f) the coordinator's Role is exactly what its Argo
backend calls, derived from the real HTTP requests a kubernetes ApiClient sends.

What these do NOT verify: a real API server admitting the pods, a CNI enforcing the NetworkPolicy, a registry
answering a push (a stand-in engine binary answers it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from typer.testing import CliRunner

from kai_flows.argo.names import OUTPUTS_ANNOTATION
from kai_flows.cli import app
from kai_flows.compile import cluster_manifests, compile_all, compile_pipeline
from kai_flows.deploy import DeployError, DeployOptions, deploy
from kai_flows.images import ImageLock, LockedImage, families, read_lock
from kai_flows.ledger.argo_backend import API_PERMISSIONS, ArgoBackend
from kai_flows.ledger.models import Job, JobStatus
from kai_flows.lint import Problem, lint_paths
from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG, STEP_LABEL
from kai_flows.store import S3Config
from kai_flows.submit import KubeBackend, Submitter
from kai_flows.submit.backends import kube_api_client
from tests.conftest import REPO

IMAGES = REPO / "images"
sys.path.insert(0, str(REPO / "tests" / "submit"))
from fake_argo import FakeArgo, kubeconfig  # noqa: E402

DIGEST = "sha256:" + "ab" * 32


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
    return path


def _has(problems: list[Problem], obj: str, field: str, message: str) -> bool:
    return any(p.object == obj and p.field == field and message in p.message for p in problems)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out)
    return out


def _templates(root: Path) -> list[dict[str, Any]]:
    return [d for p in sorted(root.glob("*.yaml")) for d in _docs(p.read_text()) if d["kind"] == "WorkflowTemplate"]


def _pod_templates(wt: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in wt["spec"]["templates"] if "container" in t]


def _cluster(root: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.name: _docs(p.read_text()) for p in sorted((root / "cluster").glob("*.yaml"))}


def _iq() -> dict[str, Any]:
    from kai_flows.pipelines import PIPELINES

    return compile_pipeline(PIPELINES["image-quality"]())


# ---------------------------------------------------------------------------------------------- (a) digests


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `podman` on PATH that builds nothing, reports an image ID, and on push writes a registry digest to the
    --digestfile, as podman does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "podman"
    script.write_text("""#!/bin/sh
while [ "$1" = "--runtime" ]; do shift 2; done
case "$1" in
  build) exit 0 ;;
  image) id=$(printf 'id %s' "$3" | sha256sum | cut -c1-64); echo "[{\\"Id\\": \\"$id\\", \\"Size\\": 1000}]" ;;
  push) shift; [ "$1" = "--digestfile" ] && { f="$2"; shift 2; }
        printf 'sha256:%s' "$(printf 'pushed %s' "$1" | sha256sum | cut -c1-64)" > "$f" ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_images_build_push_records_each_registry_digest_in_the_image_lock(fake_podman: Path, tmp_path: Path) -> None:
    lock = tmp_path / "images.lock.json"
    result = CliRunner().invoke(app, ["images", "build", "--engine", "podman", "--context", str(REPO), "--only",
                                      "quality", "--registry", "reg.example/ml", "--tag", "1.4.0", "--push",
                                      "--lock", str(lock)])
    assert result.exit_code == 0, result.output
    recorded = read_lock(lock)
    assert (recorded.registry, recorded.tag) == ("reg.example/ml", "1.4.0")
    quality = recorded.images["quality"]
    assert quality.image == "reg.example/ml/kai/quality:1.4.0"
    assert quality.id == "sha256:" + hashlib.sha256(b"id reg.example/ml/kai/quality:1.4.0").hexdigest()
    # the digest the registry answered to the push, not the local ID
    assert quality.digest == "sha256:" + hashlib.sha256(b"pushed reg.example/ml/kai/quality:1.4.0").hexdigest()


def test_compile_pins_images_by_the_lock_and_lint_refuses_latest_untagged_and_unpinned(compiled: Path,
                                                                                      tmp_path: Path) -> None:
    # The committed shape: a release tag, never `latest`, reproducible with no image built; unpinned.
    images = {c["container"]["image"] for wt in _templates(compiled) for c in _pod_templates(wt)}
    assert images and all(i.endswith(f":{DEFAULT_TAG}") for i in images) and DEFAULT_TAG != "latest"
    assert lint_paths([compiled], images_dir=IMAGES) == []
    unpinned = lint_paths([compiled], images_dir=IMAGES, require_digests=True)
    assert unpinned and all("is not pinned by a registry digest" in p.message for p in unpinned)

    lock = ImageLock("reg.example/ml", "1.4.0", {f: LockedImage(f"reg.example/ml/kai/{f}:1.4.0", "sha256:" + "0" * 64,
                                                                DIGEST) for f in families(REPO)})
    (tmp_path / "lock.json").write_text(lock.to_json())
    out = tmp_path / "pinned"
    result = CliRunner().invoke(app, ["compile", "--out", str(out), "--image-lock", str(tmp_path / "lock.json")])
    assert result.exit_code == 0, result.output
    pinned = {c["container"]["image"] for wt in _templates(out) for c in _pod_templates(wt)}
    assert pinned and all(i.startswith("reg.example/ml/kai/") and i.endswith(f":1.4.0@{DIGEST}") for i in pinned)
    assert lint_paths([out], images_dir=IMAGES, require_digests=True) == []

    wt = _iq()
    step = _pod_templates(wt)[0]
    for image, says in ((f"{DEFAULT_REGISTRY}/kai/quality:latest", "is tagged 'latest'"),
                        (f"{DEFAULT_REGISTRY}/kai/quality", "has neither a tag nor a digest")):
        step["container"]["image"] = image
        problems = lint_paths([_write(tmp_path / "wt.yaml", wt)], images_dir=IMAGES)
        field = f"spec.templates[{wt['spec']['templates'].index(step)}].container.image"
        assert _has(problems, "WorkflowTemplate/image-quality", field, says), problems
    # A production deploy without the lock stops before anything is applied.
    with pytest.raises(DeployError, match="is not pinned by a registry digest"):
        deploy(DeployOptions(source=compiled, images_dir=IMAGES, dry_run=True, require_digests=True))


# ---------------------------------------------------------------------------------------------- (b) network


def test_deploy_renders_a_default_deny_network_policy_selecting_step_pods_and_lint_requires_it(
        compiled: Path, tmp_path: Path) -> None:
    manifests = deploy(DeployOptions(source=compiled, images_dir=IMAGES, dry_run=True))
    [policy] = [m.doc for m in manifests if m.kind == "NetworkPolicy" and m.doc["metadata"]["name"] == "kai-steps"]
    kinds = [m.kind for m in manifests]
    assert kinds.index("NetworkPolicy") < kinds.index("WorkflowTemplate")  # fenced before any step can run
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchExpressions": [{"key": STEP_LABEL, "operator": "Exists"}]}
    assert spec["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in spec  # no ingress at all
    ports = [(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]]
    assert ports == [("UDP", 53), ("TCP", 53), ("TCP", 9000), ("TCP", 443), ("TCP", 6443)]  # DNS, S3, Kubernetes API
    for wt in _templates(compiled):  # every step pod carries the label the policy selects
        assert all(t["metadata"]["labels"][STEP_LABEL] == t["name"] for t in _pod_templates(wt))

    cluster = _cluster(compiled)
    namespace = cluster["00-namespace.yaml"][0]
    problems = lint_paths([_write(tmp_path / "ns.yaml", namespace)])
    assert _has(problems, "Namespace/kai-ml", "metadata.name", "no NetworkPolicy in namespace 'kai-ml' fences step")
    open_policy = copy.deepcopy(policy)
    open_policy["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    problems = lint_paths([_write(tmp_path / "np.yaml", namespace, open_policy)])
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "NetworkPolicy/kai-steps: spec.egress[3].ports: egress rule names no ports, so it allows every port: name "
        "the ports the pods need"]
    wt = _iq()
    del _pod_templates(wt)[0]["metadata"]["labels"][STEP_LABEL]
    problems = lint_paths([_write(tmp_path / "wt.yaml", wt)], images_dir=IMAGES)
    assert any(p.field.endswith("metadata.labels") and f"no label '{STEP_LABEL}'" in p.message for p in problems)


# ---------------------------------------------------------------------------------------------- (c) restricted


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def _argo_pod(spec: dict[str, Any], tmpl: dict[str, Any]) -> dict[str, Any]:
    """The pod Argo v3.7 makes of a container template (workflow/controller/workflowpod.go, createWorkflowPod):
    the executor's `init` and `wait` with no securityContext of their own (the controller's default), the main
    container, the pod securityContext and volumes, then the template's podSpecPatch merged by container name."""
    pod = {"securityContext": tmpl.get("securityContext", spec.get("securityContext")),
           "volumes": spec.get("volumes", []) + tmpl.get("volumes", []), "initContainers": [{"name": "init"}],
           "containers": [{"name": "wait"}, {**tmpl["container"], "name": "main"}]}
    patch = json.loads(tmpl.get("podSpecPatch") or "{}")
    for key in ("initContainers", "containers"):
        for change in patch.get(key, []):
            target = next(c for c in pod[key] if c["name"] == change["name"])  # Argo would add a missing one
            target["securityContext"] = {**target.get("securityContext", {}), **change.get("securityContext", {})}
    return pod


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Pod Security Standards, restricted profile (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    pod_sc, out = pod["securityContext"] or {}, []
    for c in pod["initContainers"] + pod["containers"]:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            out.append(f"{c['name']}: capabilities.drop ALL")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True or sc.get("runAsUser") == 0:
            out.append(f"{c['name']}: runAsNonRoot")
        if (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault",
                                                                                               "Localhost"):
            out.append(f"{c['name']}: seccompProfile")
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
    out += [f"volume {v['name']}" for v in pod["volumes"] if set(v) - {"name"} - RESTRICTED_VOLUMES]
    return out


def test_namespace_enforces_restricted_and_every_compiled_pod_satisfies_it(compiled: Path, tmp_path: Path) -> None:
    labels = _cluster(compiled)["00-namespace.yaml"][0]["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k.startswith("pod-security")} == {
        f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")}
    for wt in _templates(compiled):
        for tmpl in _pod_templates(wt):
            pod = _argo_pod(wt["spec"], tmpl)
            assert _restricted_violations(pod) == [], (wt["metadata"]["name"], tmpl["name"])
            assert not any(k in wt["spec"] for k in ("hostNetwork", "hostPID", "hostIPC"))

    problems = lint_paths([_write(tmp_path / "ns.yaml", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "kai-ml"}})])
    assert _has(problems, "Namespace/kai-ml", "metadata.labels.pod-security.kubernetes.io/enforce",
                "does not enforce Pod Security 'restricted'")
    wt = _iq()
    step = _pod_templates(wt)[0]
    i = wt["spec"]["templates"].index(step)
    del step["podSpecPatch"]  # Argo's executor then keeps the controller's (empty) securityContext
    step["volumes"] = [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]
    problems = lint_paths([_write(tmp_path / "wt.yaml", wt)], images_dir=IMAGES)
    obj = "WorkflowTemplate/image-quality"
    assert _has(problems, obj, f"spec.templates[{i}].podSpecPatch", "executor container 'wait' may escalate")
    assert _has(problems, obj, f"spec.templates[{i}].podSpecPatch", "executor container 'init' may escalate")
    assert _has(problems, obj, f"spec.templates[{i}].volumes[0].hostPath", "which Pod Security 'restricted' forbids")


# ---------------------------------------------------------------------------------------------- (d) emptyDir


def test_every_emptydir_has_a_size_limit_and_lint_refuses_one_without(compiled: Path, tmp_path: Path) -> None:
    volumes = [v for wt in _templates(compiled) for v in wt["spec"]["volumes"]
               + [v for t in wt["spec"]["templates"] for v in t.get("volumes", [])]]
    empty_dirs = [v for v in volumes if "emptyDir" in v]
    assert empty_dirs and all(v["emptyDir"].get("sizeLimit") for v in empty_dirs)
    wt = _iq()
    wt["spec"]["volumes"][0]["emptyDir"] = {}
    problems = lint_paths([_write(tmp_path / "wt.yaml", wt)], images_dir=IMAGES)
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "WorkflowTemplate/image-quality: spec.volumes[0].emptyDir.sizeLimit: emptyDir volume 'scratch' has no "
        "sizeLimit: a runaway step fills its node's disk and gets other pods evicted"]


# ---------------------------------------------------------------------------------------------- (e) TLS


def _repository(manifests: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    [cm] = [m.doc for m in manifests if m.kind == "ConfigMap" and m.doc["metadata"]["name"] == "artifact-repositories"]
    return cm, yaml.safe_load(cm["data"]["kai-s3"])["s3"]


def test_artifact_repository_uses_tls_unless_the_operator_opts_out_by_name(compiled: Path, tmp_path: Path) -> None:
    cm, s3 = _repository(deploy(DeployOptions(source=compiled, images_dir=IMAGES, dry_run=True, skip_templates=True)))
    assert s3["insecure"] is False and "kai-flows.io/insecure-artifact-repository" not in cm["metadata"]["annotations"]

    opted = deploy(DeployOptions(source=compiled, images_dir=IMAGES, dry_run=True, insecure_artifact_repository=True))
    cm, s3 = _repository(opted)  # validated by lint on the way: the opt-out is named on the object
    assert s3["insecure"] is True
    assert cm["metadata"]["annotations"]["kai-flows.io/insecure-artifact-repository"] == "true"

    del cm["metadata"]["annotations"]["kai-flows.io/insecure-artifact-repository"]  # insecure, silently
    problems = lint_paths([_write(tmp_path / "cm.yaml", cm)])
    assert [(p.object, p.field) for p in problems] == [("ConfigMap/artifact-repositories", "data.kai-s3")]
    assert "s3.insecure: true" in problems[0].message and "--insecure-artifact-repository" in problems[0].message


# ---------------------------------------------------------------------------------------------- (f) RBAC


VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def _rbac(request: dict[str, Any]) -> tuple[str, str, str]:
    """(API group, resource, verb) of a Kubernetes API request, as the API server's authorizer sees it."""
    parts = [p for p in request["path"].split("/") if p]
    assert parts[0] == "apis" and parts[3] == "namespaces", request["path"]
    group, resource, named = parts[1], parts[5], len(parts) > 6
    verb = VERBS.get(request["method"]) or ("get" if named else "watch" if request["query"].get("watch") else "list")
    return group, resource, verb


def _job() -> Job:
    now = datetime.now(UTC)
    known: dict[str, Any] = dict(
        id=uuid4(), pipeline="image-quality", parameters={}, tier="pro", queue_class="batch", priority=0,
        status=JobStatus.SUBMITTED, input_uri="s3://kai-artifacts/uploads/default/job-7/", attempts=0,
        created_at=now, updated_at=now, tenant="default")
    return Job(**{f.name: known.get(f.name) for f in fields(Job)})  # other columns empty, as for a new job


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    with FakeArgo(token="s3cret") as server:
        template = _iq()
        template["metadata"]["annotations"].pop(OUTPUTS_ANNOTATION)  # no outputs: nothing is read from S3
        server.add_template(template)
        yield server


def test_coordinator_role_grants_exactly_the_calls_its_argo_backend_makes(argo: FakeArgo, tmp_path: Path) -> None:
    api_client, desc = kube_api_client(config_file=str(kubeconfig(tmp_path / "kc", argo.url, "s3cret")))
    submitter = Submitter(KubeBackend(api_client, desc), templates_dir=tmp_path / "none")  # the cluster's templates
    s3 = S3Config(endpoint="minio.invalid:9000", access_key="a", secret_key="s", bucket="kai-artifacts")
    backend = ArgoBackend(submitter, s3)
    argo.script_on_create = [{"phase": "Running"}, {"phase": "Succeeded"}]
    job = _job()
    name = backend.submit(job)  # every code path the coordinator takes: submit, find, follow, finish, cancel
    assert backend.find_by_label(job.id, 0) == name
    assert backend.status(name).phase == "Running"
    assert backend.status(name).phase == "Succeeded"
    backend.cancel(name)

    called = {_rbac(r) for r in argo.requests}
    table = {(g, r, v) for (g, r), verbs in API_PERMISSIONS.items() for v in verbs}
    assert called == table  # cancel patches, nothing watches: no more, no less
    roles = {d["metadata"]["name"]: d for d in cluster_manifests()["02-rbac.yaml"] if d["kind"] == "Role"}
    rendered = {(g, r, v) for rule in roles["kai-coordinator"]["rules"] for g in rule["apiGroups"]
                for r in rule["resources"] for v in rule["verbs"]}
    assert rendered == called

    assert lint_paths([_write(tmp_path / "rbac.yaml", roles["kai-coordinator"])]) == []
    wider = copy.deepcopy(roles["kai-coordinator"])
    wider["rules"][0]["verbs"] = ["create", "get", "list", "watch"]  # the Role before: watch, and no patch
    problems = [p.message for p in lint_paths([_write(tmp_path / "rbac.yaml", wider)])]
    assert any(m.startswith("grants 'watch' on workflows (argoproj.io), which the coordinator never calls")
               for m in problems), problems
    assert any(m.startswith("lacks 'patch' on workflows (argoproj.io)") for m in problems), problems
