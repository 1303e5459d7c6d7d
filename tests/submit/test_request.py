"""Building the Workflow: shape, policy, parameter checks, and the bodies validated against Argo's API and schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from schemas import errors, schema_validator, swagger_validator

from kai_flows.policy import build_policy, load_policy
from kai_flows.submit import SubmitError, SubmitRequest, Submitter, build_workflow, parse_template
from kai_flows.submit.template import load_local_template, templates_dir

CREATE = "io.argoproj.workflow.v1alpha1.WorkflowCreateRequest"


def _build(fixture_dir: Path, **kw) -> dict:
    kw.setdefault("parameters", {"images": "uploads/default/job-1/"})
    return Submitter(templates_dir=fixture_dir).build(SubmitRequest(pipeline="image-quality", **kw))


def test_workflow_carries_queue_and_tier_policy(fixture_dir: Path) -> None:
    wf = _build(fixture_dir, parameters={"images": "uploads/default/job-1/", "max_blur": 42.5}, tier="free",
                job_id="job-1", labels={"team": "scan"})
    policy = load_policy()
    assert wf["metadata"] == {
        "generateName": "image-quality-", "namespace": "kai-ml",
        "labels": {"team": "scan", "workflows.argoproj.io/workflow-template": "image-quality",
                   "kai-flows.io/job-id": "job-1", "kai-flows.io/queue": "batch", "kai-flows.io/tier": "free"},
    }
    spec = wf["spec"]
    assert spec["workflowTemplateRef"] == {"name": "image-quality"}
    # declared order, numbers written as Argo strings; the defaulted `quality` is left to the template
    assert spec["arguments"]["parameters"] == [{"name": "images", "value": "uploads/default/job-1/"},
                                               {"name": "max_blur", "value": "42.5"}]
    assert spec["priority"] == policy.queues["batch"].weight
    assert spec["synchronization"] == {"semaphores": [{"configMapKeyRef": {"name": "kai-queues", "key": "batch"}}]}
    assert spec["podPriorityClassName"] == "low-priority-batch"
    assert spec["parallelism"] == policy.tiers["free"].max_parallel_tasks
    patch = json.loads(spec["podSpecPatch"])  # free runs on spot instances
    assert patch["priorityClassName"] == "low-priority-batch"
    assert patch["nodeSelector"] == {"kai.io/node-pool": "spot-instances"}
    assert {"key": "kai.io/node-pool", "operator": "Equal", "value": "spot-instances",
            "effect": "NoSchedule"} in patch["tolerations"]


def test_queue_override_and_defaults(fixture_dir: Path) -> None:
    default = _build(fixture_dir)  # default tier: the one on the default priority class
    assert default["metadata"]["labels"]["kai-flows.io/tier"] == "pro"
    assert default["spec"]["podPriorityClassName"] == "medium-priority-batch"
    # the patch carries the tier's class too: a compiled template's priorityClassName beats podPriorityClassName
    assert json.loads(default["spec"]["podSpecPatch"]) == {"priorityClassName": "medium-priority-batch"}
    wf = _build(fixture_dir, tier="pro", queue="interactive")
    assert wf["spec"]["priority"] == 10
    assert wf["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] == "interactive"
    assert wf["metadata"]["labels"]["kai-flows.io/queue"] == "interactive"


def test_queue_weights_follow_task_queue_config(fixture_dir: Path) -> None:
    policy = build_policy('{"interactive":{"concurrency":1,"weight":50},"batch":{"concurrency":2,"weight":7},'
                          '"maintenance":{"concurrency":1,"weight":2}}')
    info = load_local_template("image-quality", fixture_dir)
    wf = build_workflow(SubmitRequest(pipeline="image-quality", parameters={"images": "uploads/default/k/"},
                                      queue="interactive"), info, policy)
    assert wf["spec"]["priority"] == 50


@pytest.mark.parametrize(("kw", "message"), [
    ({"parameters": {"images": "uploads/default/k/", "colour": "red"}},
     "pipeline 'image-quality' declares no parameter 'colour' (declared: images, max_blur, quality)"),
    ({"parameters": {}}, "pipeline 'image-quality': parameter 'images' is required (S3 key (prefix) of the input"),
    ({"parameters": {"images": "uploads/default/k/", "quality": "ultra"}},
     "pipeline 'image-quality': parameter 'quality' = 'ultra' is not one of draft, standard, high"),
    ({"queue": "urgent"}, "unknown queue class 'urgent'; known: batch, interactive, maintenance"),
    ({"tier": "gold"}, "unknown tier 'gold'; known: enterprise, free, internal, pro"),
    ({"labels": {"kai-flows.io/job-id": "x"}}, "label 'kai-flows.io/job-id' is set by kai-flows and cannot be given"),
    ({"labels": {"team": "a b"}}, "label team='a b': not a valid Kubernetes label value"),
    ({"labels": {"-bad": "x"}}, "label key '-bad' is not a valid Kubernetes label key"),
])
def test_bad_requests_name_the_culprit(fixture_dir: Path, kw: dict, message: str) -> None:
    with pytest.raises(SubmitError) as e:
        _build(fixture_dir, **kw)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_unknown_pipeline_without_cluster(fixture_dir: Path) -> None:
    with pytest.raises(SubmitError, match=r"unknown pipeline 'nope': no committed template \(known: image-quality\)"
                                          r" and no cluster configured"):
        Submitter(templates_dir=fixture_dir).build(SubmitRequest(pipeline="nope"))


def test_bad_job_id_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid label value"):
        SubmitRequest(pipeline="image-quality", job_id="job 1/2")


def test_queue_checked_before_template_is_read(tmp_path: Path) -> None:
    # an unknown tier is reported even though the pipeline does not exist either: policy checks come first
    with pytest.raises(SubmitError, match="unknown tier 'gold'"):
        Submitter(templates_dir=tmp_path).build(SubmitRequest(pipeline="image-quality", tier="gold"))


def test_underscore_pipeline_name_maps_to_template(fixture_dir: Path) -> None:
    wf = Submitter(templates_dir=fixture_dir).build(SubmitRequest(pipeline="image_quality",
                                                                  parameters={"images": "uploads/default/k/"}))
    assert wf["spec"]["workflowTemplateRef"]["name"] == "image-quality"


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise", "internal"])
def test_create_body_valid_against_swagger_and_schema(fixture_dir: Path, tier: str) -> None:
    wf = _build(fixture_dir, tier=tier, parameters={"images": "uploads/default/k/", "quality": "high"},
                labels={"team": "scan"})
    assert errors(swagger_validator(CREATE), {"namespace": "kai-ml", "workflow": wf}) == []
    assert errors(schema_validator(), wf) == []


def test_validators_reject_what_argo_would(fixture_dir: Path) -> None:
    """The strict validators are not vacuous: a misspelt field and a wrong type are caught."""
    wf = _build(fixture_dir)
    wf["spec"]["semaphore"] = wf["spec"].pop("synchronization")  # not a Workflow spec field
    wf["spec"]["priority"] = "high"
    found = errors(schema_validator(), wf)
    assert any("'semaphore' was unexpected" in e for e in found)
    assert any("priority: 'high' is not of type 'integer'" in e for e in found)
    assert errors(swagger_validator(CREATE), {"workflow": wf, "dryRun": True}) != []


def _committed() -> list[Path]:
    d = templates_dir()
    return sorted(d.glob("*.yaml")) if d.is_dir() else []


@pytest.mark.skipif(not _committed(), reason="no committed workflow_templates/*.yaml yet (the compiler writes them)")
@pytest.mark.parametrize("path", _committed(), ids=lambda p: p.stem)
def test_every_committed_template_submits_valid_workflow(path: Path) -> None:
    info = parse_template(yaml.safe_load(path.read_text()), str(path))
    params = {p.name: (p.enum[0] if p.enum else "uploads/default/x/") for p in info.parameters if p.required}
    for tier in load_policy().tiers:
        wf = build_workflow(SubmitRequest(pipeline=path.stem, parameters=params, tier=tier), info)
        assert errors(swagger_validator(CREATE), {"workflow": wf}) == []
        assert errors(schema_validator(), wf) == []


def _radiance_field(fallback: str = "true") -> dict:
    doc = yaml.safe_load((templates_dir() / "radiance-field.yaml").read_text())
    for t in doc["spec"]["templates"]:
        if "kai-flows.io/cpu-fallback" in (t.get("metadata") or {}).get("annotations", {}):
            t["metadata"]["annotations"]["kai-flows.io/cpu-fallback"] = fallback
    return doc


def test_tier_without_gpus_strips_the_gpu_of_steps_with_a_cpu_path() -> None:
    info = parse_template(_radiance_field(), "radiance-field.yaml")
    assert info.gpu_steps == {"radiance-field": True}
    request = {"pipeline": "radiance-field", "parameters": {"images": "uploads/default/x/"}}
    free = json.loads(build_workflow(SubmitRequest(**request, tier="free"), info)["spec"]["podSpecPatch"])
    # a strategic-merge null deletes the key: the pod asks for no GPU and the step takes its CPU path
    assert free["containers"] == [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": None},
                                                                 "requests": {"nvidia.com/gpu": None}},
                                   "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": ""},
                                           {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]}]
    internal = json.loads(build_workflow(SubmitRequest(**request, tier="internal"), info)["spec"]["podSpecPatch"])
    assert internal["containers"] == free["containers"]  # no pool override, so the devices are hidden too
    assert free["nodeSelector"] == {"kai.io/node-pool": "spot-instances"}
    enterprise = json.loads(build_workflow(SubmitRequest(**request, tier="enterprise"), info)["spec"]["podSpecPatch"])
    assert "containers" not in enterprise  # a tier with GPUs keeps the compiled GPU request
    image_quality = parse_template(yaml.safe_load((templates_dir() / "image-quality.yaml").read_text()), "iq")
    assert image_quality.gpu_steps == {}
    no_gpu_steps = build_workflow(SubmitRequest(pipeline="image-quality", parameters={"images": "uploads/default/x/"},
                                                tier="free"), image_quality)
    assert "containers" not in json.loads(no_gpu_steps["spec"]["podSpecPatch"])


def test_tier_without_gpus_refuses_a_gpu_step_without_cpu_path() -> None:
    info = parse_template(_radiance_field(fallback="false"), "radiance-field.yaml")
    with pytest.raises(SubmitError, match=r"tier 'free' runs without GPUs, but pipeline 'radiance-field' has GPU "
                                          r"step\(s\) without a CPU path: radiance-field; submit it with a tier"):
        build_workflow(SubmitRequest(pipeline="radiance-field", parameters={"images": "uploads/default/x/"},
                                     tier="free"), info)
    wf = build_workflow(SubmitRequest(pipeline="radiance-field", parameters={"images": "uploads/default/x/"},
                                      tier="pro"), info)
    assert "containers" not in json.loads(wf["spec"]["podSpecPatch"])


@pytest.mark.parametrize("value", ["/etc/passwd", "uploads/../other-tenant/images", ""])
def test_an_input_key_parameter_never_leaves_the_bucket(fixture_dir: Path, value: str) -> None:
    template = parse_template(yaml.safe_load((fixture_dir / "image-quality.yaml").read_text()), "fixture")
    assert template.input_keys, "the fixture declares its inputs (kai-flows.io/inputs)"
    param = next(iter(template.input_keys))
    with pytest.raises(SubmitError, match=rf"parameter '{param}' carries the S3 key of input"):
        _build(fixture_dir, parameters={param: value})


@pytest.mark.parametrize(("tenant", "key"), [
    ("acme", "uploads/bob/photos/"),  # another tenant's upload
    ("acme", "uploads/acme-eu/photos/"),  # a tenant whose name starts the same
    ("acme", "image-quality-x1y2z/image-quality-x1y2z-123/report"),  # another workflow's artifacts
    ("acme", "uploads/"),  # every tenant's uploads at once
    ("default", "in/job-1/"),
])
def test_a_job_names_only_its_own_tenants_uploads(fixture_dir: Path, tenant: str, key: str) -> None:
    with pytest.raises(SubmitError, match=rf"pipeline 'image-quality': parameter 'images' carries the S3 key of "
                                          rf"input 'images': key '{key}' is outside what tenant '{tenant}' may read "
                                          rf"\(uploads/{tenant}/\); a job reads only its own tenant's uploads"):
        _build(fixture_dir, tenant=tenant, parameters={"images": key})


def test_own_uploads_and_operator_granted_prefixes_are_accepted(fixture_dir: Path, monkeypatch) -> None:
    wf = _build(fixture_dir, tenant="acme", parameters={"images": "uploads/acme/photos/"})
    assert wf["spec"]["arguments"]["parameters"][0] == {"name": "images", "value": "uploads/acme/photos/"}
    with pytest.raises(SubmitError, match="outside what tenant 'acme' may read"):
        _build(fixture_dir, tenant="acme", parameters={"images": "shared/calibration/rig-1/"})
    monkeypatch.setenv("KAI_TENANT_INPUT_PREFIXES", '{"acme": ["shared/calibration"]}')
    wf = _build(fixture_dir, tenant="acme", parameters={"images": "shared/calibration/rig-1/"})
    assert wf["spec"]["arguments"]["parameters"][0]["value"] == "shared/calibration/rig-1/"
    with pytest.raises(SubmitError, match=r"outside what tenant 'bob' may read \(uploads/bob/\)"):
        _build(fixture_dir, tenant="bob", parameters={"images": "shared/calibration/rig-1/"})


def test_a_malformed_tenant_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tenant '\.\./x' is not a valid name"):
        SubmitRequest(pipeline="image-quality", tenant="../x")
