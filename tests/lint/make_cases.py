"""Regenerate tests/lint/cases/*.yaml: each is the valid fixture (tests/lint/valid/) with one defect.

Run `python tests/lint/make_cases.py` after changing the valid fixture; the cases are committed so each broken
template can be read on its own. A case file's `# expect: object | template | field | message` lines list every
problem lint must report for it (and test_cases.py checks it reports nothing else).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
VALID = HERE / "valid"
CASES = HERE / "cases"
WT = "WorkflowTemplate/image-quality"

Doc = dict[str, Any]


def _template(doc: Doc, name: str) -> Doc:
    return next(t for t in doc["spec"]["templates"] if t["name"] == name)


def _task(doc: Doc, name: str) -> Doc:
    return next(t for t in _template(doc, "main")["dag"]["tasks"] if t["name"] == name)


def _container(doc: Doc, name: str) -> Doc:
    return _template(doc, name)["container"]


def _set(fn: Callable[[Doc], None]) -> Callable[[Doc], Doc]:
    def apply(doc: Doc) -> Doc:
        fn(doc)
        return doc
    return apply


# name -> (what is wrong, mutation of the WorkflowTemplate, expected problems (object, template, field, message))
WT_CASES: dict[str, tuple[str, Callable[[Doc], Doc], list[tuple[str, str, str, str]]]] = {
    # (a) Argo's JSON schema, strict
    "schema-unknown-field": (
        "a misspelt container field (argo lint --strict rejects unknown fields)",
        _set(lambda d: _container(d, "list-images").update(imagePullPolicyy="Always")),
        [(WT, "list-images", "spec.templates[1].container.imagePullPolicyy", "unknown field")]),
    "schema-wrong-type": (
        "spec.parallelism must be an integer",
        _set(lambda d: d["spec"].update(parallelism="ten")),
        [(WT, "-", "spec.parallelism", "expected integer")]),
    # (c) argo lint
    "name-too-long": (
        "a WorkflowTemplate name over 63 characters",
        _set(lambda d: d["metadata"].update(name="image-quality-" + "x" * 60)),
        [("WorkflowTemplate/image-quality-" + "x" * 60, "-", "metadata.name", "at most 63 characters")]),
    "entrypoint-undefined": (
        "the entrypoint names no template",
        _set(lambda d: d["spec"].update(entrypoint="mian")),
        [(WT, "-", "spec.entrypoint", "template 'mian' is not defined")]),
    "two-template-types": (
        "a template that is both a container and a suspend",
        _set(lambda d: _template(d, "list-images").update(suspend={})),
        [(WT, "list-images", "spec.templates[1]", "multiple template types specified (container, suspend)")]),
    "duplicate-template-name": (
        "two templates named finalize",
        _set(lambda d: d["spec"]["templates"].append(copy.deepcopy(_template(d, "finalize")))),
        [(WT, "finalize", "spec.templates[7].name", "template name 'finalize' is not unique")]),
    "bad-task-name": (
        "a task name with an underscore",
        _set(lambda d: _task(d, "enhance").update(name="enhance_image")),
        [(WT, "main", "spec.templates[0].dag.tasks[3].name", "task name 'enhance_image' is invalid")]),
    "bad-parameter-name": (
        "an input parameter name with a space",
        _set(lambda d: _template(d, "finalize")["inputs"]["parameters"].append({"name": "extra value",
                                                                                  "default": "x"})),
        [(WT, "finalize", "spec.templates[6].inputs.parameters[2].name", "parameter name 'extra value' is invalid")]),
    "output-two-sources": (
        "an output parameter with two valueFrom sources",
        _set(lambda d: _template(d, "list-images")["outputs"]["parameters"][0]["valueFrom"].update(parameter="x")),
        [(WT, "list-images", "spec.templates[1].outputs.parameters[0].valueFrom",
          "several valueFrom sources (path, parameter)")]),
    "output-no-source": (
        "an output parameter whose valueFrom has only a default",
        _set(lambda d: _template(d, "list-images")["outputs"]["parameters"][0].update(valueFrom={"default": "[]"})),
        [(WT, "list-images", "spec.templates[1].outputs.parameters[0].valueFrom", "no valueFrom source"),
         (WT, "list-images", "spec.templates[1].container.args[8]",
          "failed to resolve {{outputs.parameters.names.path}}")]),
    "unresolved-input": (
        "a misspelt input parameter in the container args",
        _set(lambda d: _container(d, "list-images")["args"].__setitem__(2, "pattern={{inputs.parameters.patern}}")),
        [(WT, "list-images", "spec.templates[1].container.args[2]",
          "failed to resolve {{inputs.parameters.patern}}: the template declares no such input")]),
    "when-not-ancestor": (
        "a `when` that reads a task that runs later",
        _set(lambda d: _task(d, "aggregate").update(when="'{{tasks.enhance.status}}' == 'Succeeded'")),
        [(WT, "main", "spec.templates[0].dag.tasks[2].when", "task 'enhance' is not an ancestor of this task")]),
    "artifact-from-non-ancestor": (
        "an artifact taken from a task that is not a dependency",
        _set(lambda d: (_task(d, "enhance").update(depends="list-images"), _task(d, "enhance").pop("when"))),
        [(WT, "main", "spec.templates[0].dag.tasks[3].arguments.artifacts[0].from",
          "missing dependency 'aggregate' for artifact 'report'")]),
    "item-outside-loop": (
        "{{item}} in a task without withItems/withParam",
        _set(lambda d: _task(d, "aggregate")["arguments"]["parameters"][0].update(value="{{item}}")),
        [(WT, "main", "spec.templates[0].dag.tasks[2].arguments.parameters[0].value",
          "failed to resolve {{item}}: only available in a task with withItems/withParam")]),
    "undeclared-workflow-parameter": (
        "a workflow parameter that spec.arguments does not declare",
        _set(lambda d: _task(d, "assess-image")["arguments"]["parameters"][1].update(
            value="{{workflow.parameters.max_blurr}}")),
        [(WT, "main", "spec.templates[0].dag.tasks[1].arguments.parameters[1].value",
          "no workflow argument 'max_blurr'")]),
    "duration-outside-metrics": (
        "{{duration}} used in a container",
        _set(lambda d: _container(d, "list-images")["env"][0].update(value="{{duration}}")),
        [(WT, "list-images", "spec.templates[1].container.env[0].value",
          "failed to resolve {{duration}}: only available in metrics")]),
    "status-outside-exit-handler": (
        "{{workflow.status}} outside the exit handler",
        _set(lambda d: _task(d, "enhance")["arguments"]["parameters"][0].update(value="{{workflow.status}}")),
        [(WT, "main", "spec.templates[0].dag.tasks[3].arguments.parameters[0].value",
          "only available in the exit handler")]),
    "dependency-undefined": (
        "depends names a task that does not exist",
        _set(lambda d: _task(d, "enhance").update(depends="aggregate && publishh")),
        [(WT, "main", "spec.templates[0].dag.tasks[3].depends", "dependency 'publishh' not defined")]),
    "dependency-cycle": (
        "list-images depends on enhance, which depends (transitively) on list-images",
        _set(lambda d: _task(d, "list-images").update(depends="enhance")),
        [(WT, "main", "spec.templates[0].dag.tasks", "dependency cycle detected")]),
    "two-loop-kinds": (
        "a task with both withParam and withItems",
        _set(lambda d: _task(d, "assess-image").update(withItems=["a.jpg", "b.jpg"])),
        [(WT, "main", "spec.templates[0].dag.tasks[1]", "only one of withItems, withParam, withSequence")]),
    "dag-active-deadline": (
        "activeDeadlineSeconds on a dag template",
        _set(lambda d: _template(d, "main").update(activeDeadlineSeconds=300)),
        [(WT, "main", "spec.templates[0].activeDeadlineSeconds", "only valid for leaf templates")]),
    "dag-timeout": (
        "timeout on a dag template",
        _set(lambda d: _template(d, "exit-handler").update(timeout="5m")),
        [(WT, "exit-handler", "spec.templates[5].timeout", "dag template doesn't support the timeout field")]),
    "dag-artifact-path": (
        "an input artifact path on a dag template",
        _set(lambda d: _template(d, "main").update(inputs={"artifacts": [{"name": "extra", "path": "/tmp/extra"}]})),
        [(WT, "main", "spec.templates[0].inputs.artifacts[0].path",
          "artifact path is only valid in container/script templates")]),
    "retry-policy": (
        "an unknown retryPolicy",
        _set(lambda d: _template(d, "list-images")["retryStrategy"].update(retryPolicy="OnSuccess")),
        [(WT, "list-images", "spec.templates[1].retryStrategy.retryPolicy", "'OnSuccess' is not a valid retryPolicy")]),
    "pod-gc-strategy": (
        "an unknown podGC strategy",
        _set(lambda d: d["spec"]["podGC"].update(strategy="OnSuccess")),
        [(WT, "-", "spec.podGC.strategy", "unknown podGC strategy 'OnSuccess'")]),
    "metric-name": (
        "a metric name with dashes",
        _set(lambda d: _template(d, "list-images")["metrics"]["prometheus"][0].update(name="kai-step-duration")),
        [(WT, "list-images", "spec.templates[1].metrics.prometheus[0].name",
          "metric name 'kai-step-duration' is invalid")]),
    "template-undefined": (
        "a task calling a template that does not exist",
        _set(lambda d: _task(d, "enhance").update(template="enhanse")),
        [(WT, "main", "spec.templates[0].dag.tasks[3].template", "template 'enhanse' is not defined")]),
    "argument-not-in-enum": (
        "a workflow argument whose value is not in its enum",
        _set(lambda d: d["spec"]["arguments"]["parameters"][1].update(value="ultra")),
        [(WT, "-", "spec.arguments.parameters[1].value", "value 'ultra' of parameter 'tier' is not in its enum")]),
    "input-default-not-in-enum": (
        "an input parameter whose default is not in its enum",
        _set(lambda d: _template(d, "enhance")["inputs"]["parameters"][0].update(default="ultra")),
        [(WT, "enhance", "spec.templates[4].inputs.parameters[0].default",
          "default 'ultra' of parameter 'tier' is not in its enum")]),
    "input-not-supplied": (
        "a task that does not pass its template's required input",
        _set(lambda d: _task(d, "aggregate").pop("arguments")),
        [(WT, "main", "spec.templates[0].dag.tasks[2].arguments",
          "input parameter 'scores' of template 'aggregate-quality' was not supplied")]),
    # (d) Kai's policy
    "gpu-on-cpu-pool": (
        "a GPU step pinned to the cpu-optimized pool",
        _set(lambda d: (_template(d, "enhance").update(nodeSelector={"kai.io/node-pool": "cpu-optimized"}),
                        _template(d, "enhance").pop("tolerations"))),
        [(WT, "enhance", "spec.templates[4].nodeSelector.kai.io/node-pool",
          "requests nvidia.com/gpu but pool 'cpu-optimized' has no GPUs")]),
    "gpu-without-pool": (
        "a GPU step with no node-pool nodeSelector",
        _set(lambda d: _template(d, "enhance").pop("nodeSelector")),
        [(WT, "enhance", "spec.templates[4].nodeSelector",
          "requests nvidia.com/gpu but has no nodeSelector kai.io/node-pool for a GPU pool")]),
    "gpu-without-toleration": (
        "a GPU step on gpu-optimized that does not tolerate the pool's taint",
        _set(lambda d: _template(d, "enhance").pop("tolerations")),
        [(WT, "enhance", "spec.templates[4].tolerations",
          "no toleration for pool 'gpu-optimized' taint kai.io/node-pool=gpu-optimized:NoSchedule")]),
    "unknown-priority-class": (
        "a priority class the policy does not define",
        _set(lambda d: _template(d, "list-images").update(priorityClassName="urgent")),
        [(WT, "list-images", "spec.templates[1].priorityClassName", "unknown priority class 'urgent'")]),
    "unknown-pool": (
        "a node pool the policy does not define",
        _set(lambda d: _template(d, "list-images").update(nodeSelector={"kai.io/node-pool": "gpu-xl"})),
        [(WT, "list-images", "spec.templates[1].nodeSelector.kai.io/node-pool", "unknown node pool 'gpu-xl'")]),
    "missing-requests-limits": (
        "a container with only a cpu request",
        _set(lambda d: _container(d, "assess-image").update(resources={"requests": {"cpu": "500m"}})),
        [(WT, "assess-image", "spec.templates[2].container.resources",
          "container 'main' is missing resources requests.memory, limits.cpu, limits.memory")]),
    "image-without-dockerfile": (
        "a Kai image with no images/<name>/Dockerfile",
        _set(lambda d: _container(d, "finalize").update(image="registry.example.com/kai/finalise:1.4.0")),
        [(WT, "finalize", "spec.templates[6].container.image",
          "image 'registry.example.com/kai/finalise:1.4.0' has no Dockerfile at")]),
    "image-not-kai": (
        "a third-party image not built from images/",
        _set(lambda d: _container(d, "finalize").update(image="python:3.11-slim")),
        [(WT, "finalize", "spec.templates[6].container.image", "image 'python:3.11-slim' is not a Kai image")]),
    "semaphore-key-unknown": (
        "a semaphore key that is no queue class",
        _set(lambda d: d["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"].update(key="realtime")),
        [(WT, "-", "spec.synchronization.semaphores[0].configMapKeyRef.key",
          "semaphore key 'realtime' is not in the policy's queues (kai-queues)")]),
    "may-run-as-root": (
        "no runAsNonRoot at pod level, and the GPU container does not set it",
        _set(lambda d: d["spec"]["securityContext"].pop("runAsNonRoot")),
        [(WT, "enhance", "spec.templates[4].container.securityContext.runAsNonRoot",
          "container 'main' may run as root")]
        # Argo's executor containers (init, wait) take the pod's runAsNonRoot only.
        + [(WT, t, f"spec.templates[{i}].podSpecPatch", "Argo's executor container")
           for i, t in ((1, "list-images"), (2, "assess-image"), (3, "aggregate-quality"), (4, "enhance"),
                        (6, "finalize"))]),
    "runs-as-root": (
        "a container with runAsUser 0",
        _set(lambda d: _container(d, "finalize")["securityContext"].update(runAsUser=0)),
        [(WT, "finalize", "spec.templates[6].container.securityContext.runAsUser",
          "container 'main' runs as root (runAsUser: 0)")]),
    "privilege-escalation": (
        "allowPrivilegeEscalation: true",
        _set(lambda d: _container(d, "list-images")["securityContext"].update(allowPrivilegeEscalation=True)),
        [(WT, "list-images", "spec.templates[1].container.securityContext.allowPrivilegeEscalation",
          "container 'main' allows privilege escalation")]),
    "capabilities-kept": (
        "capabilities not all dropped",
        _set(lambda d: _container(d, "assess-image")["securityContext"].update(capabilities={"drop": ["NET_RAW"]})),
        [(WT, "assess-image", "spec.templates[2].container.securityContext.capabilities",
          "container 'main' does not drop all capabilities")]),
}

# name -> (what is wrong, mutation of the cluster documents -> documents to write, expected problems)
CLUSTER_CASES: dict[str, tuple[str, Callable[[list[Doc], Doc], list[Doc]], list[tuple[str, str, str, str]]]] = {
    # (b) Kubernetes schemas
    "k8s-unknown-field": (
        "a Role rule with a misspelt field",
        lambda docs, wt: [_set(lambda r: r["rules"][0].update(verb=["get"]))(_kind(docs, "Role"))],
        [("Role/kai-step", "-", "rules[0].verb", "unknown field")]),
    "k8s-wrong-type": (
        "a PriorityClass whose value is not an integer",
        lambda docs, wt: [_set(lambda r: r.update(value="high"))(_kind(docs, "PriorityClass"))],
        [("PriorityClass/medium-priority-batch", "-", "value", "expected integer")]),
    "semaphore-key-not-in-configmap": (
        "the linted kai-queues ConfigMap lacks the key the template's semaphore uses (manifests win over the policy)",
        lambda docs, wt: [_set(lambda c: c["data"].pop("maintenance"))(_kind(docs, "ConfigMap")),
                          _set(lambda d: d["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"].update(
                              key="maintenance"))(wt)],
        [(WT, "-", "spec.synchronization.semaphores[0].configMapKeyRef.key",
          "semaphore key 'maintenance' is not in ConfigMap 'kai-queues'")]),
}


def _kind(docs: list[Doc], kind: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind)


def _render(what: str, name: str, docs: list[Doc], expects: list[tuple[str, str, str, str]]) -> str:
    head = [f"# Broken case '{name}': {what}.", "# Generated by tests/lint/make_cases.py from tests/lint/valid/."]
    head += [f"# expect: {' | '.join(e)}" for e in expects]
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)
    return "\n".join(head) + "\n" + body


def render() -> dict[str, str]:
    """Every generated case file: name -> text."""
    wt = yaml.safe_load((VALID / "image-quality.yaml").read_text())
    cluster = list(yaml.safe_load_all((VALID / "cluster.yaml").read_text()))
    out = {}
    for name, (what, mutate, expects) in WT_CASES.items():
        out[f"{name}.yaml"] = _render(what, name, [mutate(copy.deepcopy(wt))], expects)
    for name, (what, mutate_docs, expects) in CLUSTER_CASES.items():
        out[f"{name}.yaml"] = _render(what, name, mutate_docs(copy.deepcopy(cluster), copy.deepcopy(wt)), expects)
    return out


HAND_WRITTEN = {"not-yaml.yaml"}


def main() -> None:
    CASES.mkdir(exist_ok=True)
    files = render()
    for old in CASES.glob("*.yaml"):
        if old.name not in files and old.name not in HAND_WRITTEN:
            old.unlink()
    for name, text in files.items():
        (CASES / name).write_text(text)


if __name__ == "__main__":
    main()
