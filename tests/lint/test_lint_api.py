"""lint_paths on the valid fixture, on the repo's generated templates, and on odd input."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import yaml

from kai_flows.lint import Document, LintError, Problem, lint_documents, lint_paths

HERE = Path(__file__).parent
VALID = HERE / "valid"
REPO = HERE.parents[1]


def _write(path: Path, *docs: object) -> Path:
    path.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
    return path


def _valid_wt() -> dict:
    return yaml.safe_load((VALID / "image-quality.yaml").read_text())


def test_valid_fixture_lints_clean(images_dir: Path) -> None:
    assert lint_paths([VALID], images_dir=images_dir) == []


@pytest.mark.skipif(not list((REPO / "workflow_templates").glob("*.yaml")), reason="no compiled templates yet")
def test_repo_workflow_templates_lint_clean() -> None:
    """The committed templates and cluster manifests, checked against the repo's own images/ Dockerfiles."""
    problems = lint_paths([REPO / "workflow_templates"])
    assert problems == [], "\n".join(map(str, problems))


def test_problem_is_one_line_naming_file_object_template_field() -> None:
    p = Problem("wt.yaml", "WorkflowTemplate/x", "main", "spec.templates[0].timeout", "bad")
    assert str(p) == "wt.yaml: WorkflowTemplate/x: template 'main': spec.templates[0].timeout: bad"
    assert str(Problem("wt.yaml", "WorkflowTemplate/x", None, "spec.podGC", "bad")) == \
        "wt.yaml: WorkflowTemplate/x: spec.podGC: bad"


def test_missing_path_is_a_lint_error(tmp_path: Path) -> None:
    with pytest.raises(LintError, match="nope.yaml: no such file or directory"):
        lint_paths([tmp_path / "nope.yaml"])


def test_other_argo_kinds(tmp_path: Path, images_dir: Path) -> None:
    wt = _valid_wt()
    spec = copy.deepcopy(wt["spec"])
    spec["arguments"]["parameters"][0]["value"] = "uploads/job-1/"
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "iq-"}, "spec": spec}
    ref = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "iq-"},
           "spec": {"workflowTemplateRef": {"name": "image-quality"},
                    "arguments": {"parameters": [{"name": "images", "value": "uploads/job-1/"}]}}}
    cron = {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "nightly-quality"},
            "spec": {"schedule": "0 3 * * *", "workflowSpec": copy.deepcopy(spec)}}
    assert lint_paths([_write(tmp_path / "ok.yaml", wf, ref, cron)], images_dir=images_dir) == []
    # A Workflow (unlike a WorkflowTemplate) needs every argument's value at submit time.
    wf["spec"]["arguments"]["parameters"][0].pop("value")
    cron["spec"]["workflowSpec"]["templates"][1]["container"]["image"] = "busybox:1.36"
    problems = lint_paths([_write(tmp_path / "bad.yaml", wf, cron)], images_dir=images_dir)
    assert [(p.object, p.template, p.field) for p in problems] == [
        ("Workflow/iq-", None, "spec.arguments.parameters[0]"),
        ("CronWorkflow/nightly-quality", "list-images", "spec.workflowSpec.templates[1].container.image"),
    ], problems


def test_malformed_objects_are_reported_not_crashed_on(tmp_path: Path, images_dir: Path) -> None:
    docs = [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "a"},
         "spec": {"templates": "oops", "arguments": [1], "synchronization": {"semaphores": {"x": 1}}}},
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "b"},
         "spec": {"entrypoint": "m", "templates": [None, 3, {"name": "m", "dag": {"tasks": [None, {"depends": 5}]}},
                                                   {"name": "c", "container": "img", "metrics": [1]}]}},
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Sensor", "metadata": {"name": "s"}},
        {"apiVersion": "v1", "kind": "ConfigMap"},
        ["not", "a", "mapping"],
        {"kind": "ConfigMap"},
    ]
    problems = lint_paths([_write(tmp_path / "odd.yaml", *docs)], images_dir=images_dir)
    text = "\n".join(map(str, problems))
    assert "WorkflowTemplate/a: spec.templates: expected array" in text
    assert "WorkflowTemplate/b: spec.templates[0]: expected object" in text
    assert "Sensor/s: kind: unknown Argo kind 'Sensor'" in text
    assert "ConfigMap/?: metadata.name: required field missing" in text
    assert "document 5: not a mapping" in text
    assert "document 6: apiVersion: required field missing" in text


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ConfigMap\nmetadata: {name: [x}\n")
    [problem] = lint_paths([bad])
    assert problem.file == str(bad) and problem.message.startswith("not valid YAML: line 2")


def test_directories_recurse_and_cluster_manifests_feed_the_policy(tmp_path: Path, images_dir: Path) -> None:
    """Linting a folder reads the kai-queues ConfigMap from its cluster/ subfolder instead of the policy."""
    (tmp_path / "cluster").mkdir()
    cluster = list(yaml.safe_load_all((VALID / "cluster.yaml").read_text()))
    queues = next(d for d in cluster if d["metadata"]["name"] == "kai-queues")
    queues["data"] = {"batch": "10", "gpu": "2"}
    _write(tmp_path / "cluster" / "all.yml", *cluster)
    wt = _valid_wt()
    wt["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] = "gpu"  # not a policy queue class
    _write(tmp_path / "image-quality.yaml", wt)
    assert lint_paths([tmp_path], images_dir=images_dir) == []
    assert [p.message for p in lint_paths([tmp_path / "image-quality.yaml"], images_dir=images_dir)] == [
        "semaphore key 'gpu' is not in the policy's queues (kai-queues); known: batch, interactive, maintenance"]


def test_default_images_dir_is_the_nearest_images_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "workflow_templates").mkdir(parents=True)
    for name in ("quality", "enhance"):
        (repo / "images" / name).mkdir(parents=True)
        (repo / "images" / name / "Dockerfile").write_text("FROM scratch\n")
    _write(repo / "workflow_templates" / "image-quality.yaml", _valid_wt())
    problems = lint_paths([repo / "workflow_templates"])
    assert [(p.template, p.message) for p in problems] == [
        ("finalize", f"image 'registry.example.com/kai/finalize:1.4.0' has no Dockerfile at "
                     f"{repo.resolve() / 'images' / 'finalize' / 'Dockerfile'}")]


def test_parameterised_semaphore_key_checks_every_enum_value(tmp_path: Path, images_dir: Path) -> None:
    wt = _valid_wt()
    wt["spec"]["arguments"]["parameters"].append({"name": "queue", "value": "batch", "enum": ["batch", "gpu"]})
    wt["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] = "{{workflow.parameters.queue}}"
    problems = lint_paths([_write(tmp_path / "wt.yaml", wt)], images_dir=images_dir)
    assert [p.message.split(";")[0] for p in problems] == [
        "semaphore key 'gpu' is not in the policy's queues (kai-queues)"]


def _paths(node: object, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def test_any_wrong_value_anywhere_is_reported_never_raised(images_dir: Path) -> None:
    """Replace random fields of the valid template with values of the wrong shape: lint reports, never raises."""
    rng = random.Random(7)
    values = [None, 1, "x", [], {}, [1], {"a": 1}, True, "{{item}}", [[1]], {"name": []}, -5]
    base = _valid_wt()
    for _ in range(120):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(_paths(doc)[1:])
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = copy.deepcopy(rng.choice(values))
        problems = lint_documents([Document("wt.yaml", 0, doc)], images_dir=images_dir)
        assert all(isinstance(p, Problem) and "\n" not in str(p) for p in problems)
