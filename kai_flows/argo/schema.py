"""Check Argo objects strictly against Argo's own JSON schema (v3.7.18, shipped as package data): the one
strict validator lint and the engine's loader share.

The schema sets no `additionalProperties: false`, so a strict check (what `argo lint --strict` does with Go's
strict decoding) adds it to every object definition that lists `properties`. Definitions without
`properties` (Item, Plugin, FieldsV1, ...) and maps with their own `additionalProperties` stay free-form.
A few types are widened to what Argo's Go decoder accepts although the schema types them `string`.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

SCHEMA_FILE = "argo-v3.7.18.schema.json"
_P = "io.argoproj.workflow.v1alpha1."
ARGO_KINDS = {
    "Workflow": _P + "Workflow",
    "WorkflowTemplate": _P + "WorkflowTemplate",
    "ClusterWorkflowTemplate": _P + "ClusterWorkflowTemplate",
    "CronWorkflow": _P + "CronWorkflow",
    "WorkflowEventBinding": _P + "WorkflowEventBinding",
}
_SCALAR = ["string", "number", "integer", "boolean"]


def _strict(definitions: dict[str, Any]) -> dict[str, Any]:
    defs = copy.deepcopy(definitions)
    for d in defs.values():
        if isinstance(d.get("properties"), dict) and "additionalProperties" not in d:
            d["additionalProperties"] = False
    # intstr.IntOrString decodes from a JSON int or string; resource.Quantity from a number or string.
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] = ["string", "integer"]
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] = ["string", "number"]
    # Parameter value/default/enum are AnyString: Argo accepts strings, numbers and booleans.
    param = defs[_P + "Parameter"]["properties"]
    for key in ("value", "default"):
        param[key]["type"] = _SCALAR
    param["enum"]["items"]["type"] = _SCALAR
    return defs


@lru_cache(maxsize=1)
def _definitions() -> dict[str, Any]:
    text = resources.files("kai_flows.schemas").joinpath(SCHEMA_FILE).read_text()
    schema = json.loads(text)
    return {"$schema": schema["$schema"], "definitions": _strict(schema["definitions"])}


@lru_cache(maxsize=8)
def validator(kind: str) -> jsonschema.protocols.Validator:
    base = _definitions()
    schema = {**base, "$ref": f"#/definitions/{ARGO_KINDS[kind]}"}
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(err: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties", {}))
        return [((*path, k), "unknown field") for k in sorted(err.instance) if k not in known]
    if err.validator == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return [(path, f"expected {want}, got {_short(err.instance)}")]
    if err.validator == "required":
        missing = str(err.message).split("'")[1] if "'" in err.message else err.message
        return [((*path, missing), "required field missing")]
    if err.validator == "const":
        return [(path, f"must be {err.validator_value!r}, got {_short(err.instance)}")]
    if err.validator == "enum":
        return [(path, f"must be one of {err.validator_value}, got {_short(err.instance)}")]
    return [(path, err.message if len(err.message) <= 160 else err.message[:157] + "...")]


Path = tuple[str | int, ...]


def schema_problems(obj: dict[str, Any]) -> list[tuple[Path, str]]:
    """(field path, message) for every way `obj` breaks Argo's strict schema; [] when it is valid."""
    kind = obj.get("kind")
    if kind not in ARGO_KINDS:
        return [(("kind",), f"unknown Argo kind {kind!r}; known: {', '.join(ARGO_KINDS)}")]
    errors = sorted(validator(kind).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [problem for err in errors for problem in describe(err)]


def field_path(path: Path) -> str:
    """`spec.templates[0].dag.tasks[1].name` from a schema path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<document>"
