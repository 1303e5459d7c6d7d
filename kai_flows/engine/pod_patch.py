"""What a podSpecPatch does to the main container's resources, as Argo and Kubernetes would apply it.

Argo merges the workflow's `spec.podSpecPatch` and then the template's `podSpecPatch` into the pod it builds
(workflowpod.go: `util.ApplyPodSpecPatch`, a strategic merge: containers merge by name, `resources.limits` and
`resources.requests` key by key, a null deletes a key). Both are Argo-substituted strings, JSON or YAML, so a
template can size its container from its inputs (`{{inputs.parameters.kai-memory}}`). The rest of a patch (node
placement, executor security contexts) is cluster-only for the local engine; the main container's cpu, memory and
GPU limits are not, because the container runtime enforces them: the engine applies them, per pod, after the same
substitution. Kubernetes refuses a pod whose request exceeds its limit; so does the engine, with its message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import yaml

from kai_flows.argo.units import parse_quantity
from kai_flows.policy import GPU_RESOURCE

MAIN = "main"
_KEYS = ("cpu", "memory", GPU_RESOURCE)


class PodPatchError(ValueError):
    """A podSpecPatch that Argo could not apply (not JSON/YAML, a bad quantity), or a pod Kubernetes refuses."""


@dataclass(frozen=True)
class MainResources:
    """The main container's requests and limits as quantity strings (None: not set)."""

    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, resources: dict[str, Any]) -> MainResources:
        def pick(section: Any) -> tuple[tuple[str, str], ...]:
            section = section if isinstance(section, dict) else {}
            return tuple((k, str(section[k])) for k in _KEYS if section.get(k) is not None)

        return cls(pick(resources.get("requests")), pick(resources.get("limits")))

    def limit(self, key: str) -> float | None:
        value = dict(self.limits).get(key)
        return None if value is None else float(parse_quantity(value))

    @property
    def gpus(self) -> int:
        """Kubernetes: an extended resource's request equals its limit; either may be given."""
        value = dict(self.limits).get(GPU_RESOURCE, dict(self.requests).get(GPU_RESOURCE))
        return int(parse_quantity(value)) if value is not None else 0


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise PodPatchError(f"{where}: podSpecPatch is not valid JSON or YAML: {str(e).splitlines()[0]}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PodPatchError(f"{where}: podSpecPatch must be a mapping (a pod spec), not {type(value).__name__}")
    return value


def main_patch(text: str, where: str) -> dict[str, Any] | None:
    """The `resources` the patch gives the main container (None: it does not touch them)."""
    containers = _parse(text, where).get("containers")
    for c in containers if isinstance(containers, list) else []:
        if isinstance(c, dict) and c.get("name") == MAIN and "resources" in c:
            res = c["resources"]
            if res is not None and not isinstance(res, dict):
                raise PodPatchError(f"{where}: podSpecPatch containers[{MAIN}].resources must be a mapping")
            return res or {}
    return None


def _merge(base: tuple[tuple[str, str], ...], patch: Any, where: str) -> tuple[tuple[str, str], ...]:
    if patch is None:
        return ()  # `limits: null` deletes the whole map
    if not isinstance(patch, dict):
        raise PodPatchError(f"{where}: must be a mapping of quantities")
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
            continue
        try:
            if parse_quantity(value) < 0:
                raise ValueError(value)
        except ValueError:
            raise PodPatchError(f"{where}.{key}: {value!r} is not a Kubernetes quantity") from None
        merged[key] = str(value)
    return tuple((k, merged[k]) for k in _KEYS if k in merged)


def apply(base: MainResources, patches: tuple[str, ...], where: str) -> MainResources:
    """`base` with each (already substituted) patch merged in order; raises PodPatchError as Argo/Kubernetes would
    refuse the pod."""
    out = base
    for text in patches:
        res = main_patch(text, where)
        if res is None:
            continue
        at = f"{where}: podSpecPatch containers[{MAIN}].resources"
        if "requests" in res:
            out = replace(out, requests=_merge(out.requests, res["requests"], f"{at}.requests"))
        if "limits" in res:
            out = replace(out, limits=_merge(out.limits, res["limits"], f"{at}.limits"))
    limits = dict(out.limits)
    for key, value in out.requests:
        # Kubernetes' own validation (a pod with a request over its limit is invalid); Argo reports it as an Error.
        if key in limits and parse_quantity(value) > parse_quantity(limits[key]):
            raise PodPatchError(f"{where}: spec.containers[0].resources.requests: Invalid value: \"{value}\": must "
                                f"be less than or equal to {key} limit of {limits[key]}")
    return out
