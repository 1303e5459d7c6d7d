"""Admission: claim the next job, weighted-fair across queue classes and capped by each class's concurrency.

Fairness is start-time fair queuing over classes. Each class has a `pass` (the virtual time at which it may next
be admitted) and the scheduler has a virtual clock `vtime`. Among the classes with a waiting job, spare capacity
and no admission hold (holds.py: back-pressure), the one with the smallest max(pass, vtime) is admitted (ties:
the heavier class, then the name); its pass advances by STRIDE / weight and vtime moves to the admitted start.
With every class backlogged the admissions follow the weights exactly (10:5:1 by default); a class that was idle,
held or at its cap restarts at vtime instead of cashing in credit, so it neither bursts nor starves anyone. The
state lives in the database (002_queue_scheduler.sql) so every coordinator continues the same schedule.

Why a lock on top of FOR UPDATE SKIP LOCKED: SKIP LOCKED alone stops two claimers from taking the same *row*,
but the cap is a property of a *set* of rows: two claimers could both count 4 in-flight jobs under a cap of 5
and both admit one (6). So each claim transaction first takes one transaction-level advisory lock,
serialising the decision (count in-flight, read and advance the scheduler state, mark the job submitted).
Under READ COMMITTED every statement after the lock sees the commits of the previous holder (it released the
lock only by committing), so the count is exact. The critical section is a few index lookups, far shorter than
any job, so one lock for all classes costs nothing that matters and keeps the shared schedule consistent.
SKIP LOCKED still matters inside it: a queued row locked by another transaction (an operator cancelling it,
say) is passed over instead of stalling admission for every class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from uuid import UUID

import psycopg

from kai_flows.ledger.errors import LedgerError
from kai_flows.ledger.jobs import _append_history
from kai_flows.ledger.models import Job, JobStatus

CLAIM_LOCK_KEY = 0x6B61695F636C6169  # 'kai_clai'
STRIDE = 1_000_000_000  # pass advances STRIDE // weight per admission: integer, exact for weights up to 10^9


class QueueLike(Protocol):
    concurrency: int
    weight: int


def _checked(queues: Mapping[str, QueueLike]) -> list[tuple[str, int, int]]:
    if not queues:
        raise LedgerError("no queue classes to claim from")
    out = []
    for name, q in queues.items():
        for attr in ("concurrency", "weight"):
            v = getattr(q, attr, None)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise LedgerError(f"queue class {name!r}: {attr} must be a positive integer, got {v!r}")
        out.append((name, q.concurrency, q.weight))
    return out


def claim_next(
    conn: psycopg.Connection, queues: Mapping[str, QueueLike], claimer: str, *, lease_seconds: float = 30.0
) -> Job | None:
    """Mark the next admissible job submitted (owned by `claimer` for `lease_seconds`) and return it, or None."""
    classes = _checked(queues)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK_KEY,))
        isolation = conn.execute("SELECT current_setting('transaction_isolation') AS i").fetchone()["i"]
        if isolation != "read committed":  # a snapshot older than the lock would count stale in-flight jobs
            raise LedgerError(f"claim_next needs a READ COMMITTED transaction, the connection uses {isolation}")
        rows = conn.execute(
            """SELECT q.name, q.concurrency, q.weight, COALESCE(s.pass, 0) AS pass,
                      (SELECT count(*) FROM jobs j
                        WHERE j.queue_class = q.name AND j.status IN ('submitted', 'running')) AS in_flight
                 FROM unnest(%s::text[], %s::int[], %s::int[]) AS q(name, concurrency, weight)
                 LEFT JOIN queue_scheduler s ON s.queue_class = q.name
                WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.queue_class = q.name AND j.status = 'queued')
                  AND NOT EXISTS (SELECT 1 FROM admission_holds h WHERE h.queue_class = q.name AND h.until > now())""",
            ([c[0] for c in classes], [c[1] for c in classes], [c[2] for c in classes]),
        ).fetchall()
        vtime = conn.execute("SELECT vtime FROM queue_scheduler_clock").fetchone()["vtime"]
        eligible = sorted(
            (r for r in rows if r["in_flight"] < r["concurrency"]),
            key=lambda r: (max(r["pass"], vtime), -r["weight"], r["name"]),
        )
        for r in eligible:
            row = conn.execute(
                """SELECT id FROM jobs WHERE queue_class = %s AND status = 'queued'
                    ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""",
                (r["name"],),
            ).fetchone()
            if row is None:
                continue  # every waiting job of this class is locked by someone else right now
            start = max(r["pass"], vtime)
            conn.execute(
                """INSERT INTO queue_scheduler (queue_class, pass) VALUES (%s, %s)
                   ON CONFLICT (queue_class) DO UPDATE SET pass = EXCLUDED.pass""",
                (r["name"], start + STRIDE // r["weight"]),
            )
            conn.execute("UPDATE queue_scheduler_clock SET vtime = %s", (start,))
            job = Job.from_row(conn.execute(
                """UPDATE jobs SET status = 'submitted', submitted_at = now(), updated_at = now(),
                          claimed_by = %s, lease_expires_at = now() + make_interval(secs => %s)
                    WHERE id = %s RETURNING *""",
                (claimer, lease_seconds, row["id"]),
            ).fetchone())
            _append_history(conn, job.id, JobStatus.QUEUED, JobStatus.SUBMITTED, job.attempts, None, claimer, None)
            return job
    return None


def adopt(
    conn: psycopg.Connection, claimer: str, *, lease_seconds: float = 30.0, following: list[UUID] | None = None
) -> list[Job]:
    """Take over in-flight jobs whose owner's lease ran out, or that `claimer` owned before a restart; and jobs
    cancelled in flight whose workflow such an owner had not stopped yet (their `stop_workflow` is set).

    `following`: the jobs the caller already follows (left alone).
    """
    with conn.transaction():
        rows = conn.execute(
            """UPDATE jobs SET claimed_by = %(me)s, lease_expires_at = now() + make_interval(secs => %(lease)s)
                WHERE id IN (SELECT id FROM jobs
                              WHERE (status IN ('submitted', 'running') OR stop_workflow)
                                AND NOT (id = ANY(%(following)s))
                                AND (claimed_by IS NULL OR claimed_by = %(me)s OR lease_expires_at < now())
                              FOR UPDATE SKIP LOCKED)
                RETURNING *""",
            {"me": claimer, "lease": lease_seconds, "following": following or []},
        ).fetchall()
    return [Job.from_row(r) for r in rows]


def renew(conn: psycopg.Connection, claimer: str, job_ids: list[UUID], *, lease_seconds: float = 30.0) -> set[UUID]:
    """Extend the lease on the jobs `claimer` still owns; returns those ids (the others were taken over or ended)."""
    if not job_ids:
        return set()
    rows = conn.execute(
        """UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s)
            WHERE id = ANY(%s) AND claimed_by = %s AND status IN ('submitted', 'running') RETURNING id""",
        (lease_seconds, job_ids, claimer),
    ).fetchall()
    return {r["id"] for r in rows}
