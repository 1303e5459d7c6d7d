"""A workflow's state as kai-flows reports it: phase, per-node phases and where its output artifacts are in S3."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

DONE_PHASES = ("Succeeded", "Failed", "Error")


class ArtifactLocation(BaseModel):
    node: str  # node name, e.g. image-quality-x7k2p.aggregate
    task: str  # the node's display name (the DAG task, with "(i:item)" on fan-out children)
    name: str  # artifact name
    bucket: str | None  # None: the bucket of the artifact repository in force
    key: str

    @property
    def ref(self) -> str:
        """`<task>.<artifact>`, as the template's kai-flows.io/outputs annotation names pipeline outputs."""
        return f"{self.task}.{self.name}"


class NodeStatus(BaseModel):
    id: str
    name: str
    display_name: str
    type: str
    template: str | None
    phase: str
    message: str | None = None
    started_at: str | None = None


class WorkflowStatus(BaseModel):
    name: str
    namespace: str
    phase: str  # "" until the controller picks it up, then Pending|Running|Succeeded|Failed|Error
    message: str | None = None
    progress: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    labels: dict[str, str] = {}
    nodes: list[NodeStatus] = []
    artifacts: list[ArtifactLocation] = []

    @property
    def done(self) -> bool:
        return self.phase in DONE_PHASES

    @property
    def node_phases(self) -> dict[str, str]:
        """Display name -> phase, for the nodes that run something (pods) and the DAG's tasks."""
        return {n.display_name: n.phase for n in self.nodes}

    def outputs(self, declared: dict[str, str]) -> dict[str, ArtifactLocation]:
        """Pipeline outputs (name -> "<task>.<artifact>", the template's annotation) to the artifacts produced."""
        by_ref = {a.ref: a for a in self.artifacts}
        return {name: by_ref[ref] for name, ref in declared.items() if ref in by_ref}


def parse_status(workflow: dict[str, Any]) -> WorkflowStatus:
    meta = workflow.get("metadata") or {}
    status = workflow.get("status") or {}
    repo = ((status.get("artifactRepositoryRef") or {}).get("artifactRepository") or {}).get("s3") or {}
    nodes, artifacts = [], []
    for node_id, n in sorted((status.get("nodes") or {}).items()):
        name = n.get("name", node_id)
        display = n.get("displayName") or name.rsplit(".", 1)[-1]
        nodes.append(NodeStatus(id=n.get("id", node_id), name=name, display_name=display, type=n.get("type", ""),
                                template=n.get("templateName"), phase=n.get("phase", ""), message=n.get("message"),
                                started_at=n.get("startedAt")))
        for art in (n.get("outputs") or {}).get("artifacts") or []:
            s3 = art.get("s3")
            if s3 and s3.get("key"):
                artifacts.append(ArtifactLocation(node=name, task=display, name=art["name"],
                                                  bucket=s3.get("bucket") or repo.get("bucket"), key=s3["key"]))
    return WorkflowStatus(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""), phase=status.get("phase") or "",
        message=status.get("message"), progress=status.get("progress"), started_at=status.get("startedAt"),
        finished_at=status.get("finishedAt"), labels=meta.get("labels") or {}, nodes=nodes, artifacts=artifacts,
    )
