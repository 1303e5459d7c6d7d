"""The ledger's records and the job life cycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobStatus
# The valid moves (mirrored by the job_status_transitions table the database enforces).
# submitted -> succeeded|failed covers a workflow that finished between two polls; failed -> queued is a retry.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.SUBMITTED, S.CANCELLED}),
    S.SUBMITTED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
IN_FLIGHT = frozenset({S.SUBMITTED, S.RUNNING})


@dataclass(frozen=True)
class Job:
    id: UUID
    pipeline: str
    parameters: dict[str, Any]
    tier: str
    queue_class: str
    priority: int
    status: JobStatus
    input_uri: str | None
    output_uri: str | None
    workflow_name: str | None
    tenant: str
    attempts: int
    error: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None = None  # the client's key, when it gave one (migration 004)
    stop_workflow: bool = False  # cancelled in flight, its workflow not yet stopped (migration 004)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        # Only the known columns: a later migration may add columns without breaking older code.
        known = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        return cls(**{**known, "status": JobStatus(row["status"])})


@dataclass(frozen=True)
class JobOutput:
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    job_id: UUID
    from_status: JobStatus | None
    to_status: JobStatus
    attempt: int
    workflow_name: str | None
    actor: str | None
    detail: str | None
    at: datetime
