"""Check plain Kubernetes objects against the strict schemas shipped by `kubernetes-validate` (and custom
resources against the CRDs kai-flows ships: kai_flows.lint.crd_schema).

`kubernetes_validate.validate` reloads the 1.8 MB definitions file on every call and stops at the first error;
this builds one validator per kind from the same package data, caches it, and reports every error.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jsonschema
import referencing
from kubernetes_validate import utils as kv

from kai_flows.argo.schema import describe as _describe
from kai_flows.lint.problem import Reporter


@lru_cache(maxsize=1)
def kubernetes_version() -> str:
    """The newest Kubernetes version kubernetes-validate ships schemas for (e.g. 1.37.0)."""
    return kv.latest_version()


@lru_cache(maxsize=1)
def _registry() -> referencing.Registry:
    defs = kv.schema_contents(f"kubernetes-json-schema/v{kubernetes_version()}-local-strict/_definitions.json",
                              kubernetes_version())
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


@lru_cache(maxsize=64)
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = f"kubernetes-json-schema/v{kubernetes_version()}-local-strict/{kind.lower()}-{api}.json"
    try:
        schema = kv.schema_contents(path, kubernetes_version())
    except FileNotFoundError:
        return None
    return jsonschema.validators.Draft202012Validator(schema, registry=_registry())


def check_kubernetes_schema(obj: dict[str, Any], report: Reporter) -> None:
    kind, api_version = str(obj["kind"]), str(obj["apiVersion"])
    validator = _validator(kind, api_version)
    if validator is None:
        from kai_flows.lint.crd_schema import check_crd_schema

        if not check_crd_schema(obj, report):
            report(("kind",), f"no Kubernetes {kubernetes_version()} schema for kind {kind} in {api_version}, and "
                              "no CustomResourceDefinition of it ships with kai-flows")
        return
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        for path, message in _describe(err):
            report(path, message)
