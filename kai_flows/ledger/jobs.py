"""The ledger API: enqueue jobs, move them along their life cycle, record outputs, read them back.

Every function takes a psycopg connection (autocommit, dict rows: see `db.connect`) and runs in a transaction
of its own. A status change locks the job row, checks the move against `TRANSITIONS`, updates the job and
appends one history row in the same transaction; repeating the move the job already made changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from kai_flows.ledger.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    UnknownQueueClass,
    UnknownTier,
)
from kai_flows.ledger.models import TERMINAL, TRANSITIONS, HistoryEntry, Job, JobOutput, JobStatus
from kai_flows.policy import Policy, PolicyError, load_policy
from kai_flows.tenancy import DEFAULT_TENANT, TenancyError, check_tenant

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _uuid(job_id: UUID | str) -> UUID:
    try:
        return job_id if isinstance(job_id, UUID) else UUID(str(job_id))
    except ValueError:
        raise JobNotFound(f"job id {job_id!r} is not a UUID") from None


def _resolve(policy: Policy, tier: str, queue_class: str | None) -> tuple[str, str, int]:
    """(tier, queue class, default priority) from the policy; unknown names are errors naming them."""
    try:
        t = policy.tier(tier)
    except PolicyError as e:
        raise UnknownTier(str(e)) from None
    queue = queue_class or t.queue
    try:
        policy.queue(queue)
    except PolicyError as e:
        raise UnknownQueueClass(str(e)) from None
    return t.name, queue, policy.priority_class(t.priority_class).value


def enqueue(
    conn: psycopg.Connection,
    pipeline: str,
    parameters: dict[str, Any] | None = None,
    *,
    tier: str,
    queue_class: str | None = None,
    priority: int | None = None,
    input_uri: str | None = None,
    output_uri: str | None = None,
    tenant: str = DEFAULT_TENANT,
    policy: Policy | None = None,
) -> Job:
    """Record a new queued job. The queue class defaults to the tier's, the priority to its priority class's value.
    `tenant`: whose job it is; the coordinator lets it read only that tenant's inputs (kai_flows/tenancy.py)."""
    job, _created = enqueue_once(conn, pipeline, parameters, tier=tier, queue_class=queue_class, priority=priority,
                                 input_uri=input_uri, output_uri=output_uri, tenant=tenant, policy=policy)
    return job


def enqueue_once(
    conn: psycopg.Connection,
    pipeline: str,
    parameters: dict[str, Any] | None = None,
    *,
    tier: str,
    queue_class: str | None = None,
    priority: int | None = None,
    input_uri: str | None = None,
    output_uri: str | None = None,
    tenant: str = DEFAULT_TENANT,
    idempotency_key: str | None = None,
    policy: Policy | None = None,
) -> tuple[Job, bool]:
    """`enqueue`, idempotent by a client-chosen key: (job, True) when this call queued it, (the job the key's first
    use queued, False) on a repeat. The same key with a different request raises IdempotencyConflict."""
    if not pipeline:
        raise LedgerError("a job needs a pipeline name")
    try:
        check_tenant(tenant)
    except TenancyError as e:
        raise LedgerError(str(e)) from None
    if parameters is not None and not isinstance(parameters, dict):
        raise LedgerError(f"job parameters must be a JSON object, got {type(parameters).__name__}")
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
        raise LedgerError("an idempotency key is 1 to 255 characters")
    tier, queue, default_priority = _resolve(policy or load_policy(), tier, queue_class)
    priority = default_priority if priority is None else priority
    request = {"pipeline": pipeline, "parameters": parameters or {}, "tier": tier, "queue_class": queue,
               "priority": priority, "input_uri": input_uri, "output_uri": output_uri}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO jobs (pipeline, parameters, tier, queue_class, priority, input_uri, output_uri, tenant,
                                 idempotency_key, request_sha256)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING *""",
            (pipeline, Jsonb(parameters or {}), tier, queue, priority, input_uri, output_uri, tenant,
             idempotency_key, digest if idempotency_key else None),
        ).fetchone()
        if row is not None:
            _append_history(conn, row["id"], None, JobStatus.QUEUED, 0, None, None, None)
            return Job.from_row(row), True
    # The key was used before (its INSERT committed first: ON CONFLICT waited for it, so the row is visible now).
    row = conn.execute("SELECT * FROM jobs WHERE tenant = %s AND idempotency_key = %s",
                       (tenant, idempotency_key)).fetchone()
    if row["request_sha256"] != digest:
        raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was already used for job {row['id']} with a "
                                  "different request; use a new key for a new job")
    return Job.from_row(row), False


def get_job(conn: psycopg.Connection, job_id: UUID | str) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = %s", (_uuid(job_id),)).fetchone()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return Job.from_row(row)


def list_jobs(
    conn: psycopg.Connection, *, status: JobStatus | None = None, queue_class: str | None = None,
    tenant: str | None = None, limit: int | None = None, newest_first: bool = False,
) -> list[Job]:
    order = "created_at DESC, id DESC" if newest_first else "created_at, id"
    rows = conn.execute(
        f"""SELECT * FROM jobs
            WHERE (%(s)s::text IS NULL OR status = %(s)s) AND (%(q)s::text IS NULL OR queue_class = %(q)s)
              AND (%(t)s::text IS NULL OR tenant = %(t)s)
            ORDER BY {order} LIMIT %(n)s""",
        {"s": status, "q": queue_class, "t": tenant, "n": limit},
    ).fetchall()
    return [Job.from_row(r) for r in rows]


def counts_by_class(conn: psycopg.Connection) -> dict[tuple[str, JobStatus], int]:
    """(queue class, status) -> how many jobs are queued, submitted or running (what depths and caps count)."""
    rows = conn.execute(
        """SELECT queue_class, status, count(*) AS n FROM jobs
            WHERE status IN ('queued', 'submitted', 'running') GROUP BY queue_class, status"""
    ).fetchall()
    return {(r["queue_class"], JobStatus(r["status"])): r["n"] for r in rows}


def history(conn: psycopg.Connection, job_id: UUID | str) -> list[HistoryEntry]:
    rows = conn.execute("SELECT * FROM job_status_history WHERE job_id = %s ORDER BY id", (_uuid(job_id),)).fetchall()
    return [
        HistoryEntry(**{**r, "from_status": r["from_status"] and JobStatus(r["from_status"]),
                        "to_status": JobStatus(r["to_status"])})
        for r in rows
    ]


def outputs(conn: psycopg.Connection, job_id: UUID | str, *, attempt: int | None = None) -> list[JobOutput]:
    """The outputs recorded for a job's attempt (default: its current attempt)."""
    job = get_job(conn, job_id)
    rows = conn.execute(
        "SELECT uri, sha256, size FROM job_outputs WHERE job_id = %s AND attempt = %s ORDER BY uri",
        (job.id, job.attempts if attempt is None else attempt),
    ).fetchall()
    return [JobOutput(**r) for r in rows]


def _append_history(
    conn: psycopg.Connection, job_id: UUID, old: JobStatus | None, new: JobStatus, attempt: int,
    workflow_name: str | None, actor: str | None, detail: str | None,
) -> None:
    conn.execute(
        """INSERT INTO job_status_history (job_id, from_status, to_status, attempt, workflow_name, actor, detail)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (job_id, old, new, attempt, workflow_name, actor, detail),
    )


def _insert_outputs(conn: psycopg.Connection, job: Job, items: Iterable[JobOutput]) -> None:
    for o in items:
        if not SHA256_RE.match(o.sha256):
            raise LedgerError(f"output {o.uri}: sha256 must be 64 lowercase hex digits, got {o.sha256!r}")
        if o.size < 0:
            raise LedgerError(f"output {o.uri}: negative size {o.size}")
        # Same (job, attempt, uri) again is the same output reported again: keep the first record.
        conn.execute(
            """INSERT INTO job_outputs (job_id, attempt, uri, sha256, size) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (job_id, attempt, uri) DO NOTHING""",
            (job.id, job.attempts, o.uri, o.sha256, o.size),
        )


def transition(
    conn: psycopg.Connection,
    job_id: UUID | str,
    to: JobStatus | str,
    *,
    workflow_name: str | None = None,
    error: str | None = None,
    outputs: Iterable[JobOutput] = (),
    actor: str | None = None,
) -> Job:
    """Move a job to status `to`; a move it already made is a no-op, an invalid one raises InvalidTransition."""
    try:
        new = JobStatus(to)
    except ValueError:
        raise InvalidTransition(f"unknown job status {to!r}; known: {', '.join(s.value for s in JobStatus)}") from None
    with conn.transaction():
        row = conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (_uuid(job_id),)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        job = Job.from_row(row)
        if job.status == new:
            return job  # the same event again: idempotent, no second history row
        if new not in TRANSITIONS[job.status]:
            allowed = ", ".join(sorted(TRANSITIONS[job.status])) or "nothing (final)"
            raise InvalidTransition(f"job {job.id}: cannot go from {job.status} to {new} (allowed: {allowed})")
        retry = job.status == JobStatus.FAILED and new == JobStatus.QUEUED
        row = conn.execute(
            """UPDATE jobs SET status = %(new)s, updated_at = now(),
                   workflow_name = CASE WHEN %(retry)s THEN NULL ELSE COALESCE(%(wf)s, workflow_name) END,
                   error = CASE WHEN %(retry)s THEN NULL ELSE COALESCE(%(err)s, error) END,
                   attempts = attempts + CASE WHEN %(retry)s THEN 1 ELSE 0 END,
                   submitted_at = CASE WHEN %(new)s = 'submitted' THEN now() ELSE submitted_at END,
                   started_at = CASE WHEN %(new)s = 'running' THEN now() ELSE started_at END,
                   finished_at = CASE WHEN %(terminal)s THEN now() WHEN %(retry)s THEN NULL ELSE finished_at END,
                   -- a job cancelled in flight keeps its owner and lease until its workflow is stopped
                   stop_workflow = %(stop)s,
                   claimed_by = CASE WHEN (%(terminal)s AND NOT %(stop)s) OR %(retry)s THEN NULL ELSE claimed_by END,
                   lease_expires_at = CASE WHEN (%(terminal)s AND NOT %(stop)s) OR %(retry)s THEN NULL
                                           ELSE lease_expires_at END
               WHERE id = %(id)s RETURNING *""",
            {"new": new, "retry": retry, "wf": workflow_name, "err": error, "terminal": new in TERMINAL, "id": job.id,
             "stop": new == JobStatus.CANCELLED and job.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)},
        ).fetchone()
        updated = Job.from_row(row)
        _insert_outputs(conn, updated, outputs)
        _append_history(conn, job.id, job.status, new, updated.attempts, updated.workflow_name, actor, error)
    return updated


def retry(conn: psycopg.Connection, job_id: UUID | str, *, actor: str | None = None) -> Job:
    """Queue a failed job again; its attempt counter goes up by one."""
    return transition(conn, job_id, JobStatus.QUEUED, actor=actor)


def cancel(conn: psycopg.Connection, job_id: UUID | str, *, actor: str | None = None, reason: str | None = None) -> Job:
    """Cancel a queued, submitted or running job (its coordinator then cancels the workflow)."""
    return transition(conn, job_id, JobStatus.CANCELLED, actor=actor, error=reason)


def workflow_stopped(conn: psycopg.Connection, job_id: UUID | str) -> None:
    """A cancelled job's workflow has been stopped (or was never created): nothing is left to do for it."""
    conn.execute("UPDATE jobs SET stop_workflow = false, claimed_by = NULL, lease_expires_at = NULL WHERE id = %s",
                 (_uuid(job_id),))


def set_workflow(conn: psycopg.Connection, job_id: UUID | str, workflow_name: str) -> Job:
    """Record the workflow that runs an in-flight job (the same name again is a no-op)."""
    with conn.transaction():
        row = conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (_uuid(job_id),)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        job = Job.from_row(row)
        if job.workflow_name == workflow_name:
            return job
        if job.workflow_name is not None or job.status != JobStatus.SUBMITTED:
            raise InvalidTransition(
                f"job {job.id} ({job.status}, workflow {job.workflow_name}) cannot take workflow {workflow_name}"
            )
        row = conn.execute(
            "UPDATE jobs SET workflow_name = %s, updated_at = now() WHERE id = %s RETURNING *", (workflow_name, job.id)
        ).fetchone()
    return Job.from_row(row)
