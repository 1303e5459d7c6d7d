"""Small WorkflowTemplates for the engine tests: containers are `python -c CODE ARGS...`."""

from __future__ import annotations

import copy
from typing import Any


def container(name: str, code: str, *args: str, params: list[dict[str, Any]] | None = None,
              in_artifacts: list[dict[str, Any]] | None = None, out_params: list[str] | None = None,
              out_artifacts: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A container template running `python -c code args...`. Output parameters are read from files named
    after them under `{{outputs.parameters.X.path}}`; pass those paths in `args` as needed."""
    t: dict[str, Any] = {"name": name, "container": {"image": "python:3.11", "command": ["python", "-c", code],
                                                      "args": list(args)}}
    inputs: dict[str, Any] = {}
    if params:
        inputs["parameters"] = params
    if in_artifacts:
        inputs["artifacts"] = in_artifacts
    if inputs:
        t["inputs"] = inputs
    outputs: dict[str, Any] = {}
    if out_params:
        outputs["parameters"] = [{"name": p, "valueFrom": {"path": f"/tmp/out/{p}"}} for p in out_params]
    if out_artifacts:
        outputs["artifacts"] = [{"archive": {"none": {}}, **a} for a in out_artifacts]
    if outputs:
        t["outputs"] = outputs
    t.update(extra)
    return t


def dag(name: str, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "dag": {"tasks": tasks, **extra.pop("dag_extra", {})}, **extra}


def workflow(templates: list[dict[str, Any]], *, name: str = "t", params: list[dict[str, Any]] | None = None,
             annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": name, "namespace": "kai-ml", "annotations": dict(annotations or {})},
        "spec": {"entrypoint": templates[0]["name"], "templates": copy.deepcopy(templates), **spec},
    }
    if params:
        doc["spec"]["arguments"] = {"parameters": params}
    return doc


# Reusable step code -------------------------------------------------------------------------------------------
OK = "pass"
FAIL = "import sys; print('boom: step failed on purpose', file=sys.stderr); sys.exit(3)"
ECHO = "import sys; print(sys.argv[1])"  # result = first arg
WRITE_PARAM = "import sys, pathlib; pathlib.Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True); " \
              "pathlib.Path(sys.argv[1]).write_text(sys.argv[2] + '\\n')"
