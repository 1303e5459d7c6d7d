"""What a WorkflowTemplate declares for submission: its parameters (required, defaults, enums) and outputs.

Read from the committed `workflow_templates/<name>.yaml` or from the cluster (a backend's `get_template`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kai_flows import resources
from kai_flows.argo.names import INPUTS_ANNOTATION, OUTPUTS_ANNOTATION
from kai_flows.policy import CPU_FALLBACK_ANNOTATION, GPU_RESOURCE
from kai_flows.submit.errors import SubmitError


def templates_dir() -> Path:
    """`$KAI_TEMPLATES_DIR`, else the WorkflowTemplates shipped with kai-flows (package data)."""
    return resources.templates_dir()


def template_name(pipeline: str) -> str:
    """Pipelines are named like `image-quality`; accept the Python spelling `image_quality` too."""
    return pipeline.strip().replace("_", "-")


@dataclass(frozen=True)
class DeclaredParameter:
    name: str
    default: str | None  # None: no value in the template, so the submitter must give one
    enum: tuple[str, ...] | None
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    parameters: tuple[DeclaredParameter, ...]
    outputs: dict[str, str]  # pipeline output -> "<task>.<artifact>" (the kai-flows.io/outputs annotation)
    source: str  # where it was read, for messages
    # container templates that request a GPU -> whether they may run without one (kai-flows.io/cpu-fallback)
    gpu_steps: dict[str, bool] = field(default_factory=dict)
    # parameter -> the pipeline input whose S3 key it carries (the kai-flows.io/inputs annotation)
    input_keys: dict[str, str] = field(default_factory=dict)

    def parameter(self, name: str) -> DeclaredParameter | None:
        return next((p for p in self.parameters if p.name == name), None)


def parse_template(doc: dict[str, Any], source: str) -> TemplateInfo:
    if not isinstance(doc, dict) or doc.get("kind") != "WorkflowTemplate":
        raise SubmitError(f"{source}: not a WorkflowTemplate")
    meta = doc.get("metadata") or {}
    params = []
    for p in ((doc.get("spec") or {}).get("arguments") or {}).get("parameters") or []:
        has_value = "value" in p or "valueFrom" in p
        default = None if not has_value else ("" if p.get("value") is None else str(p.get("value")))
        enum = tuple(str(v) for v in p["enum"]) if p.get("enum") else None
        params.append(DeclaredParameter(p["name"], default, enum, p.get("description", "")))
    annotations = meta.get("annotations") or {}
    try:
        outputs = json.loads(annotations.get(OUTPUTS_ANNOTATION) or "{}")
        inputs = json.loads(annotations.get(INPUTS_ANNOTATION) or "{}")
    except json.JSONDecodeError:
        raise SubmitError(f"{source}: annotation {OUTPUTS_ANNOTATION} or {INPUTS_ANNOTATION} is not valid JSON") \
            from None
    return TemplateInfo(meta.get("name", ""), tuple(params), outputs, source, _gpu_steps(doc),
                        {param: name for name, param in inputs.items()})


def _gpu_steps(doc: dict[str, Any]) -> dict[str, bool]:
    steps = {}
    for t in (doc.get("spec") or {}).get("templates") or []:
        resources = (t.get("container") or {}).get("resources") or {}
        if any(GPU_RESOURCE in (resources.get(k) or {}) for k in ("limits", "requests")):
            annotations = (t.get("metadata") or {}).get("annotations") or {}
            steps[t.get("name", "")] = annotations.get(CPU_FALLBACK_ANNOTATION) == "true"
    return steps


def load_local_template(name: str, directory: Path | None = None) -> TemplateInfo | None:
    """The committed template `<dir>/<name>.yaml`, or None when there is no such file."""
    path = (directory or templates_dir()) / f"{template_name(name)}.yaml"
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SubmitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_template(doc, str(path))


def known_local_templates(directory: Path | None = None) -> list[str]:
    d = directory or templates_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []
