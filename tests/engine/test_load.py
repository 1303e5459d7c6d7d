"""load.py: the supported subset loads; anything else is refused at load time, by name."""

from __future__ import annotations

import pytest

from kai_flows.engine import TemplateError, load_workflow
from tests.conftest import REPO
from tests.engine.wf import OK, container, dag, workflow


def base() -> dict:
    return workflow([dag("main", [{"name": "a", "template": "ok"}]), container("ok", OK)])


def test_compiled_templates_load():
    for path in sorted((REPO / "workflow_templates").glob("*.yaml")):
        wf = load_workflow(path)
        assert wf.entrypoint in wf.templates
        assert any(f.endswith("securityContext") for f in wf.ignored)  # cluster-only, recorded


VALID_BODIES = {  # a minimal body Argo's schema accepts, for each template kind the engine does not run
    "steps": [[{"name": "a", "template": "ok"}]], "script": {"image": "python:3.11", "source": "print(1)"},
    "resource": {"action": "create", "manifest": "kind: ConfigMap"}, "suspend": {}, "http": {"url": "http://x"},
    "containerSet": {"containers": [{"name": "c", "image": "python:3.11"}]},
}


@pytest.mark.parametrize("kind", sorted(VALID_BODIES))
def test_other_template_kinds_are_refused_by_name(kind):
    doc = base()
    doc["spec"]["templates"].append({"name": "x", kind: VALID_BODIES[kind]})
    with pytest.raises(TemplateError, match=f"template 'x' uses '{kind}', which the local engine does not support"):
        load_workflow(doc)


@pytest.mark.parametrize(("where", "field", "value"), [
    ("spec", "hooks", {"exit": {"template": "ok"}}), ("task", "templateRef", {"name": "x"}),
    ("task", "hooks", {}), ("template", "daemon", True),
])
def test_unsupported_fields_are_named(where, field, value):
    doc = base()
    target = {"spec": doc["spec"], "task": doc["spec"]["templates"][0]["dag"]["tasks"][0],
              "template": doc["spec"]["templates"][1]}[where]
    target[field] = value
    with pytest.raises(TemplateError, match=f"'{field}'"):
        load_workflow(doc)


def test_what_argos_schema_refuses_is_named_by_field_path():
    """The loader reads the strict Argo schema lint uses (kai_flows/argo/schema.py) before its own checks: a
    misspelt field or a wrong type is named as Argo would refuse it."""
    doc = base()
    doc["spec"]["volumeClaimGCX"] = {}
    doc["spec"]["templates"][1]["daemon"] = {}
    with pytest.raises(TemplateError, match=r"<dict>: spec.volumeClaimGCX: unknown field \(and 1 more\); Argo's "
                                            r"schema \(v3.7\) refuses it"):
        load_workflow(doc)


def test_output_parameter_other_than_path_is_refused():
    doc = base()
    doc["spec"]["templates"][1]["outputs"] = {"parameters": [{"name": "p", "valueFrom": {"jsonPath": "{.x}"}}]}
    with pytest.raises(TemplateError, match="valueFrom.jsonPath"):
        load_workflow(doc)


def test_archived_output_is_refused():
    doc = base()
    doc["spec"]["templates"][1]["outputs"] = {"artifacts": [{"name": "o", "path": "/o"}]}
    with pytest.raises(TemplateError, match="archive: {none: {}}"):
        load_workflow(doc)


def test_unknown_semaphore_queue_is_refused():
    doc = base()
    doc["spec"]["synchronization"] = {"semaphores": [{"configMapKeyRef": {"name": "kai-queues", "key": "vip"}}]}
    with pytest.raises(TemplateError, match="queue 'vip' is not a queue class"):
        load_workflow(doc)


def test_graph_errors():
    doc = base()
    doc["spec"]["templates"][0]["dag"]["tasks"] = [{"name": "a", "template": "ok", "depends": "b"},
                                                   {"name": "b", "template": "ok", "depends": "a"}]
    with pytest.raises(TemplateError, match="dependency cycle"):
        load_workflow(doc)
    doc["spec"]["templates"][0]["dag"]["tasks"] = [{"name": "a", "template": "ok", "depends": "zz"}]
    with pytest.raises(TemplateError, match="unknown task 'zz'"):
        load_workflow(doc)
    doc["spec"]["templates"][0]["dag"]["tasks"] = [{"name": "a", "template": "nope"}]
    with pytest.raises(TemplateError, match="template 'nope' is not defined"):
        load_workflow(doc)


def test_leaf_only_fields_on_a_dag_are_refused():
    doc = base()
    doc["spec"]["templates"][0]["activeDeadlineSeconds"] = "5"
    with pytest.raises(TemplateError, match=r"spec.templates\[main\].activeDeadlineSeconds: "
                                            r"templates.main.activeDeadlineSeconds is only valid for leaf templates"):
        load_workflow(doc)


def test_not_a_workflow_template(tmp_path):
    p = tmp_path / "cm.yaml"
    p.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(TemplateError, match=r"cm\.yaml: kind: expected a WorkflowTemplate, got 'ConfigMap'"):
        load_workflow(p)


def test_durations_and_quantities():
    doc = base()
    t = doc["spec"]["templates"][1]
    t["timeout"] = "1m30s"
    t["activeDeadlineSeconds"] = "120"
    t["container"]["resources"] = {"limits": {"memory": "512Mi", "cpu": "500m"}}
    t["retryStrategy"] = {"limit": "2", "backoff": {"duration": "10s", "factor": "2", "maxDuration": "5m"}}
    wf = load_workflow(doc)
    ok = wf.templates["ok"]
    assert ok.deadline == 90 and ok.memory_limit == 512 * 2**20 and ok.cpu_limit == 0.5
    assert ok.retry is not None and ok.retry.limit == 2 and ok.retry.policy == "OnFailure"
    assert ok.retry.backoff.max_duration == 300
