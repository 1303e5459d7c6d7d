"""Check custom resources of the operators kai-flows renders for (the Prometheus Operator's ServiceMonitor and
PrometheusRule) against their CustomResourceDefinitions' `openAPIV3Schema`, shipped as package data in
kai_flows/schemas/crds/ (see its README for source, commit and licence).

The API server validates a custom resource against that schema and, with strict field validation (kubectl's
default), refuses unknown fields; so does this: at load time every object schema that lists `properties` and
neither `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`.
`nullable` admits null and `x-kubernetes-int-or-string` an integer or a string, as the API server reads them;
`metadata` is checked as Kubernetes' ObjectMeta. CEL rules (`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import jsonschema
import yaml

from kai_flows.argo.schema import describe as _describe
from kai_flows.lint.problem import Reporter

OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _structural(schema: Any) -> Any:
    """An OpenAPI v3 schema of a CRD as a strict JSON schema (see the module docstring)."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    nested = ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not")
    out = {k: _structural(v) if k in nested else v
           for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _structural(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@lru_cache(maxsize=1)
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of every version the shipped CRDs serve."""
    from kai_flows.resources import schemas_dir

    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((schemas_dir() / "crds").glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            strict = _structural(schema)
            strict["properties"]["metadata"] = {"$ref": OBJECT_META}
            strict["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version['name']}"}
            strict["properties"]["kind"] = {"const": spec["names"]["kind"]}
            strict.setdefault("required", [])
            for key in ("apiVersion", "kind", "metadata"):
                if key not in strict["required"]:
                    strict["required"].append(key)
            found[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = strict
    return found


def crd_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) of every custom resource whose CRD kai-flows ships."""
    return sorted(_crds())


@lru_cache(maxsize=16)
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    from kai_flows.lint.kube_schema import _registry  # Kubernetes' definitions: ObjectMeta

    schema = _crds().get((api_version, kind))
    if schema is None:
        return None
    return jsonschema.validators.Draft202012Validator(schema, registry=_registry())


def check_crd_schema(obj: dict[str, Any], report: Reporter) -> bool:
    """Report every way `obj` breaks its CRD's schema; False when kai-flows ships no CRD for its kind."""
    validator = _validator(str(obj.get("apiVersion")), str(obj.get("kind")))
    if validator is None:
        return False
    for err in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        for path, message in _describe(err):
            report(path, message)
    return True
