"""Admission holds: a queue class whose workflows cannot be scheduled, or whose submissions the backend refused,
admits nothing until the cause is gone (back-pressure; migration 004).

A hold is a row per (class, reason, coordinator) with an expiry: the coordinator that saw the cause renews it on
every pass while the cause lasts and drops it when it is gone; one that dies leaves a row that lapses at `until`.
`claim_next` skips every class with a live hold, whoever wrote it, so all replicas admit alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg

HoldReason = Literal["unschedulable", "backend_refused"]
HOLD_REASONS: tuple[HoldReason, ...] = ("unschedulable", "backend_refused")


@dataclass(frozen=True)
class Hold:
    queue_class: str
    reason: HoldReason
    detail: str
    held_by: str
    since: datetime
    until: datetime


def hold(conn: psycopg.Connection, queue_class: str, reason: HoldReason, detail: str, *, held_by: str,
         seconds: float) -> None:
    """Hold `queue_class` for `seconds` from now (renewing this coordinator's hold keeps its `since`)."""
    conn.execute(
        """INSERT INTO admission_holds (queue_class, reason, detail, held_by, until)
           VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))
           ON CONFLICT (queue_class, reason, held_by)
           DO UPDATE SET detail = EXCLUDED.detail, until = EXCLUDED.until,
                         since = CASE WHEN admission_holds.until < now() THEN now() ELSE admission_holds.since END""",
        (queue_class, reason, detail[:1000], held_by, seconds),
    )


def release(conn: psycopg.Connection, *, held_by: str, reason: HoldReason, keep: Iterable[str] = (),
            only: Iterable[str] | None = None) -> None:
    """Drop this coordinator's holds for `reason`: those of the classes in `only` (default: every class), except
    those of the classes in `keep`."""
    conn.execute(
        """DELETE FROM admission_holds WHERE held_by = %(me)s AND reason = %(reason)s
              AND NOT (queue_class = ANY(%(keep)s)) AND (%(only)s::text[] IS NULL OR queue_class = ANY(%(only)s))""",
        {"me": held_by, "reason": reason, "keep": sorted(keep), "only": None if only is None else sorted(only)},
    )


def active_holds(conn: psycopg.Connection) -> dict[str, list[Hold]]:
    """Queue class -> its live holds (oldest first); lapsed rows are cleaned up on the way."""
    conn.execute("DELETE FROM admission_holds WHERE until < now() - interval '1 hour'")
    rows = conn.execute(
        "SELECT * FROM admission_holds WHERE until > now() ORDER BY queue_class, since, reason, held_by"
    ).fetchall()
    out: dict[str, list[Hold]] = {}
    for r in rows:
        out.setdefault(r["queue_class"], []).append(Hold(**r))
    return out
