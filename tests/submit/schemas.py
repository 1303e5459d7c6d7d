"""Strict validators for request bodies: Argo's swagger (the Argo Server REST API) and Argo's JSON schema.

Neither file sets `additionalProperties: false`, so an unknown field would pass; these validators add it to
every object definition that lists properties and says nothing else about extras (as `argo lint --strict` does).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012

from tests.conftest import ARGO_SPECS

ARGO_DIR = ARGO_SPECS
SWAGGER = ARGO_DIR / "swagger.json"
SCHEMA = ARGO_DIR / "schema.json"


def _strict(definitions: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(definitions)
    for d in out.values():
        if d.get("type") == "object" and "properties" in d and "additionalProperties" not in d:
            d["additionalProperties"] = False
    return out


@cache
def _loaded(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.skip(f"{path} is not here (the Argo v3.7 swagger/schema live in ../shared/argo)")
    return json.loads(path.read_text())


def swagger_validator(definition: str) -> jsonschema.Validator:
    """A validator for one swagger definition, e.g. io.argoproj.workflow.v1alpha1.WorkflowCreateRequest."""
    doc = {"definitions": _strict(_loaded(SWAGGER)["definitions"])}
    registry = Registry().with_resource("urn:swagger", Resource(contents=doc, specification=DRAFT4))
    schema = {"$ref": f"urn:swagger#/definitions/{definition}"}
    return jsonschema.Draft4Validator(schema, registry=registry)


def schema_validator(definition: str = "io.argoproj.workflow.v1alpha1.Workflow") -> jsonschema.Validator:
    """A validator for one definition of Argo's JSON schema (draft 2020-12)."""
    doc = {"definitions": _strict(_loaded(SCHEMA)["definitions"])}
    registry = Registry().with_resource("urn:argo", Resource(contents=doc, specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"urn:argo#/definitions/{definition}"}, registry=registry)


def errors(validator: jsonschema.Validator, instance: Any) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(instance))
