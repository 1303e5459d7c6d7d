"""The compiled YAML carries the policy and passes every location through Argo variables."""

import subprocess
import sys

import yaml

from kai_flows.compile import compile_pipeline, render_all
from kai_flows.pipeline import Pipeline
from kai_flows.pipelines import PIPELINES
from tests.conftest import REPO
from tests.foundation.steps_fixture import count_lines, needs_list, on_gpu


def _templates(wt):
    return {t["name"]: t for t in wt["spec"]["templates"]}


def test_every_location_is_an_argo_variable():
    p = Pipeline("t")
    first = p.task(count_lines, text=p.input_artifact("doc"), label="x")
    p.task(needs_list, numbers=[1, 2], extra=first["summary"])
    t = _templates(compile_pipeline(p))["count-lines"]
    args = t["container"]["args"]
    assert args[0] == "tests.foundation.steps_fixture:count_lines"
    assert "text={{inputs.artifacts.text.path}}" in args
    assert "summary={{outputs.artifacts.summary.path}}" in args
    assert "label={{inputs.parameters.label}}" in args
    assert "lines={{outputs.parameters.lines.path}}" in args
    assert not any(a.startswith("/") or "=/" in a for a in args), "no hard-coded path"
    assert t["inputs"]["parameters"][1] == {"name": "scale", "default": "1.0"}
    assert t["inputs"]["parameters"][2] == {"name": "mode", "default": "fast", "enum": ["fast", "slow"]}
    assert t["outputs"]["artifacts"][0]["archive"] == {"none": {}}


def test_policy_on_every_container_and_gpu_placement():
    p = Pipeline("t")
    p.task(on_gpu, label="a")
    wt = compile_pipeline(p)
    t = _templates(wt)["on-gpu"]
    res = t["container"]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1"
    assert t["nodeSelector"] == {"kai.io/node-pool": "gpu-optimized"}
    assert {"key": "kai.io/node-pool", "operator": "Equal", "value": "gpu-optimized", "effect": "NoSchedule"} in \
        t["tolerations"]
    assert t["priorityClassName"] == "medium-priority-batch"
    assert t["retryStrategy"]["limit"] == "2" and t["retryStrategy"]["backoff"]["duration"] == "10s"
    assert t["activeDeadlineSeconds"] == "60"
    sc = t["container"]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert t["container"]["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    assert [m["name"] for m in t["metrics"]["prometheus"]] == ["kai_step_duration_seconds", "kai_step_failures_total"]
    spec = wt["spec"]
    assert spec["synchronization"] == {"semaphores": [{"configMapKeyRef": {"name": "kai-queues", "key": "batch"}}]}
    assert spec["priority"] == 5 and spec["podGC"]["strategy"] == "OnPodSuccess"
    assert spec["serviceAccountName"] == "kai-step"
    assert spec["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "kai-s3"}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_fan_out_and_when_compile_to_argo_fields():
    p = Pipeline("t")
    first = p.task(count_lines, text=p.input_artifact("doc"))
    item = p.each(first["words"])
    p.task(count_lines, name="per-word", text=p.input_artifact("doc2"), label=item,
           when=(first["lines"] == 3) & (first["label"] != "skip me"))
    task = _templates(compile_pipeline(p))["main"]["dag"]["tasks"][1]
    assert task["withParam"] == "{{tasks.count-lines.outputs.parameters.words}}"
    assert task["depends"] == "count-lines"
    assert task["when"] == ("({{tasks.count-lines.outputs.parameters.lines}} == 3) && "
                            "('{{tasks.count-lines.outputs.parameters.label}}' != 'skip me')")


def test_generated_files_are_deterministic_and_committed():
    first, second = render_all(), render_all()
    assert first == second
    for rel, text in first.items():
        committed = REPO / "workflow_templates" / rel
        assert committed.exists(), f"{rel} is not committed: run `make templates`"
        assert committed.read_text() == text, f"{rel} differs from the compiled output: run `make templates`"


def test_compile_cli_twice_gives_identical_bytes(tmp_path):
    cmd = [sys.executable, "-m", "kai_flows.cli", "compile", "--registry", "reg.local", "--tag", "v1"]
    for out in ("a", "b"):
        subprocess.run([*cmd, "--out", str(tmp_path / out)], check=True, cwd=REPO, capture_output=True)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.yaml"))
    assert a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.yaml"))
    assert all((tmp_path / "a" / r).read_bytes() == (tmp_path / "b" / r).read_bytes() for r in a)
    wt = yaml.safe_load((tmp_path / "a" / "image-quality.yaml").read_text())
    images = {t["container"]["image"] for t in wt["spec"]["templates"] if "container" in t}
    assert images == {"reg.local/kai/quality:v1"}


def test_cluster_manifests_least_privilege_and_secret_refs():
    files = render_all()
    rbac = list(yaml.safe_load_all(files["cluster/02-rbac.yaml"]))
    roles = {d["metadata"]["name"]: d["rules"] for d in rbac if d["kind"] == "Role"}
    assert roles["kai-coordinator"] == [  # what its Argo backend calls (tests/lint/test_cluster_hardening.py)
        {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "get", "list", "patch"]},
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]}]
    assert roles["kai-step"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]
    repo = yaml.safe_load_all(files["cluster/04-artifact-repositories.yaml"])
    cm = next(repo)
    s3 = yaml.safe_load(cm["data"]["kai-s3"])["s3"]
    assert s3["accessKeySecret"] == {"name": "kai-s3-credentials", "key": "accessKey"}
    assert "accessKey" not in s3 and "secretKey" not in s3
    queues = next(yaml.safe_load_all(files["cluster/03-queues.yaml"]))
    assert queues["data"] == {"interactive": "5", "batch": "10", "maintenance": "2"}
    pcs = list(yaml.safe_load_all(files["cluster/01-priority-classes.yaml"]))
    assert len(pcs) == 7 and all(pc["globalDefault"] is False for pc in pcs)


def test_every_pipeline_compiles():
    for name, build in PIPELINES.items():
        assert compile_pipeline(build())["metadata"]["name"] == name


def test_each_pipeline_gets_a_dag_picture_read_from_its_yaml():
    files = render_all()
    dag = files["reconstruction.dag.md"]
    assert "```mermaid\nflowchart TD" in dag
    assert "quality_gate --> plan_reconstruction" in dag
    assert "plan_reconstruction -- Succeeded --> preprocess" in dag  # a depends on a task result
    assert 'assess_image[["assess-image<br/><i>for each item</i>"]]' in dag  # fan-out
    assert "when quality-gate.verdict == reject" in dag
    assert "subgraph on_exit" in dag
