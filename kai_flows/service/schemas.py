"""The coordinator API's request and response bodies (JSON, validated by pydantic; OpenAPI at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from kai_flows.ledger.holds import HoldReason
from kai_flows.ledger.models import HistoryEntry, Job, JobOutput, JobStatus
from kai_flows.tenancy import DEFAULT_TENANT


class JobRequest(BaseModel):
    """A job to queue: a pipeline, its parameters, where its input is, and whose and how urgent it is."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(min_length=1, description="pipeline name, e.g. reconstruction")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the pipeline's typed parameters")
    input_uri: str | None = Field(default=None, description="s3://bucket/key of the input (or a JSON object "
                                  "{input: key}); must lie under the tenant's uploads")
    output_uri: str | None = None
    tier: str = Field(default="pro", description="subscription tier: free, pro, enterprise, internal")
    queue: str | None = Field(default=None, description="queue class; default: the tier's")
    priority: int | None = Field(default=None, description="within the class; default: the tier's priority class")
    tenant: str = DEFAULT_TENANT


class _View(BaseModel):
    """A response body read off a ledger record's attributes (fields it does not list are left out)."""

    model_config = ConfigDict(from_attributes=True)


class HistoryView(_View):
    from_status: JobStatus | None
    to_status: JobStatus
    attempt: int
    workflow_name: str | None
    actor: str | None
    detail: str | None
    at: datetime


class OutputView(_View):
    uri: str
    sha256: str
    size: int


class JobView(_View):
    id: UUID
    pipeline: str
    parameters: dict[str, Any]
    tier: str
    queue_class: str
    priority: int
    tenant: str
    status: JobStatus
    input_uri: str | None
    output_uri: str | None
    workflow_name: str | None
    attempts: int
    error: str | None
    idempotency_key: str | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    history: list[HistoryView] | None = Field(default=None, description="status changes, oldest first (GET one)")
    outputs: list[OutputView] | None = Field(default=None, description="recorded outputs of the current attempt")

    @classmethod
    def of(cls, job: Job, history: list[HistoryEntry] | None = None,
           outputs: list[JobOutput] | None = None) -> JobView:
        view = cls.model_validate(job)
        view.history = None if history is None else [HistoryView.model_validate(h) for h in history]
        view.outputs = None if outputs is None else [OutputView.model_validate(o) for o in outputs]
        return view


class JobList(BaseModel):
    jobs: list[JobView]


class HoldView(BaseModel):
    reason: HoldReason
    detail: str
    held_by: str
    since: datetime
    until: datetime


class QueueView(BaseModel):
    name: str
    concurrency: int
    weight: int
    queued: int
    submitted: int
    running: int
    held: list[HoldView] = Field(description="why the class admits nothing now (empty: it admits)")


class QueueList(BaseModel):
    queues: list[QueueView]


class Problem(BaseModel):
    """Every error: one line naming the thing at fault."""

    detail: str
