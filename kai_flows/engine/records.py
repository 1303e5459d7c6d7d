"""Run records in the shape of Argo's `Workflow.status`, written atomically, plus the run registry.

`<out>/run.json` (and a copy in the registry, `<cache>/runs/<run>/run.json`) holds `phase`, `startedAt`,
`finishedAt`, `progress`, `message`, `nodes` keyed by node id (Argo's NodeStatus fields) and a `kai` section
with what Argo has no field for: per-node wall/CPU time, peak memory and the memory-limit flag, the run's
parameters, inputs and store. A resume reads the registry copy back.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FINAL_PHASES = {"Succeeded", "Failed", "Error", "Skipped", "Omitted"}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: Path, data: Any, *, fsync: bool = True) -> None:
    """tmp file in the same folder + os.replace: a reader sees the old or the new file, never half. `fsync`
    guards against power loss too; a killed engine alone cannot tear the file either way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, separators=(",", ":"))  # the C encoder: a 400-node record in a few ms
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Node:
    """One Argo NodeStatus plus the engine's own figures (`kai`)."""

    id: str
    name: str
    display_name: str
    type: str  # DAG | TaskGroup | Retry | Pod | Skipped
    template_name: str
    phase: str = "Pending"
    boundary_id: str = ""
    children: list[str] = field(default_factory=list)
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""
    pod_name: str = ""
    kai: dict[str, Any] = field(default_factory=dict)

    @property
    def fulfilled(self) -> bool:
        return self.phase in FINAL_PHASES

    def to_argo(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "name": self.name, "displayName": self.display_name, "type": self.type,
            "templateName": self.template_name, "phase": self.phase,
        }
        if self.boundary_id:
            d["boundaryID"] = self.boundary_id
        if self.children:
            d["children"] = list(self.children)
        for key, value in (("inputs", self.inputs), ("outputs", self.outputs), ("startedAt", self.started_at),
                           ("finishedAt", self.finished_at), ("message", self.message)):
            if value:
                d[key] = value
        if self.kai:
            d["kai"] = dict(self.kai)
        return d

    @classmethod
    def from_argo(cls, d: dict[str, Any]) -> Node:
        return cls(
            id=d["id"], name=d["name"], display_name=d.get("displayName", ""), type=d.get("type", ""),
            template_name=d.get("templateName", ""), phase=d.get("phase", ""), boundary_id=d.get("boundaryID", ""),
            children=list(d.get("children", [])), inputs=d.get("inputs"), outputs=d.get("outputs"),
            started_at=d.get("startedAt"), finished_at=d.get("finishedAt"), message=d.get("message", ""),
            kai=dict(d.get("kai", {})),
        )


def registry_dir(cache_dir: Path) -> Path:
    return cache_dir / "runs"


def list_runs(cache_dir: Path) -> list[dict[str, Any]]:
    """Every recorded run, newest first (unreadable records are listed with their error, not skipped)."""
    runs = []
    root = registry_dir(cache_dir)
    if not root.is_dir():
        return []
    for entry in root.iterdir():
        path = entry / "run.json"
        if not path.is_file():
            continue
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            runs.append({"phase": "?", "message": f"unreadable: {e}", "kai": {"name": entry.name}})
    runs.sort(key=lambda r: r.get("startedAt") or "", reverse=True)
    return runs


def read_run(cache_dir: Path, run: str) -> dict[str, Any]:
    from kai_flows.engine.model import EngineError

    path = registry_dir(cache_dir) / run / "run.json"
    if not path.is_file():
        raise EngineError(f"no run named {run!r} in {registry_dir(cache_dir)}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"run record {path} is unreadable: {e}") from None
