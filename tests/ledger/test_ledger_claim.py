"""Admission by queue class: weighted-fair order, per-class caps, and a storm of concurrent claimers."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from ledger_helpers import python

from kai_flows.ledger import jobs
from kai_flows.ledger.claim import claim_next
from kai_flows.ledger.errors import LedgerError
from kai_flows.policy import QueueClass

WORKER = str(Path(__file__).with_name("_storm_worker.py"))
WEIGHTS = {"interactive": 10, "batch": 5, "maintenance": 1}


def queues(caps: dict[str, int]) -> dict[str, QueueClass]:
    return {n: QueueClass(name=n, concurrency=caps[n], weight=w) for n, w in WEIGHTS.items()}


def fill(conn: psycopg.Connection, counts: dict[str, int]) -> None:
    # Bulk insert (one statement) keeps the fixtures fast; created_at order = insertion order per class.
    conn.execute(
        """INSERT INTO jobs (pipeline, tier, queue_class, created_at)
           SELECT 'p', 'pro', q, clock_timestamp() FROM unnest(%s::text[], %s::int[]) AS c(q, n),
                  generate_series(1, n)""",
        (list(counts), list(counts.values())),
    )


def order(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        """SELECT j.queue_class FROM job_status_history h JOIN jobs j ON j.id = h.job_id
            WHERE h.to_status = 'submitted' ORDER BY h.id"""
    ).fetchall()
    return [r["queue_class"] for r in rows]


def test_backlogged_classes_are_admitted_in_proportion_to_their_weights(conn: psycopg.Connection) -> None:
    fill(conn, {"interactive": 40, "batch": 40, "maintenance": 40})
    q = queues({"interactive": 100, "batch": 100, "maintenance": 100})
    got = [claim_next(conn, q, "c").queue_class for _ in range(48)]
    for window in (got[:16], got[16:32], got[32:48]):
        assert Counter(window) == {"interactive": 10, "batch": 5, "maintenance": 1}
    assert got[0] == "interactive"  # ties go to the heavier class


def test_within_a_class_higher_priority_then_older_first(conn: psycopg.Connection) -> None:
    old = jobs.enqueue(conn, "p", tier="pro", queue_class="batch", priority=1)
    urgent = jobs.enqueue(conn, "p", tier="pro", queue_class="batch", priority=5)
    new = jobs.enqueue(conn, "p", tier="pro", queue_class="batch", priority=1)
    q = queues({"interactive": 5, "batch": 5, "maintenance": 5})
    assert [claim_next(conn, q, "c").id for _ in range(3)] == [urgent.id, old.id, new.id]
    assert claim_next(conn, q, "c") is None


def test_a_class_at_its_cap_waits_while_the_others_proceed(conn: psycopg.Connection) -> None:
    fill(conn, {"interactive": 10, "batch": 10})
    q = queues({"interactive": 2, "batch": 3, "maintenance": 1})
    claimed = [claim_next(conn, q, "c") for _ in range(5)]
    assert Counter(j.queue_class for j in claimed) == {"interactive": 2, "batch": 3}
    assert claim_next(conn, q, "c") is None  # both at their caps
    jobs.transition(conn, next(j for j in claimed if j.queue_class == "interactive").id, "succeeded")
    assert claim_next(conn, q, "c").queue_class == "interactive"
    assert claim_next(conn, q, "c") is None


def test_an_idle_class_gets_no_burst_of_credit_when_it_returns(conn: psycopg.Connection) -> None:
    fill(conn, {"interactive": 60})
    q = queues({"interactive": 100, "batch": 100, "maintenance": 100})
    for _ in range(50):
        claim_next(conn, q, "c")
    fill(conn, {"batch": 20})  # batch was idle during 50 admissions
    got = [claim_next(conn, q, "c").queue_class for _ in range(9)]
    assert Counter(got) == {"interactive": 6, "batch": 3}  # 2:1 from here on, not 9 batch in a row


def test_jobs_of_classes_not_offered_are_left_alone(conn: psycopg.Connection) -> None:
    fill(conn, {"maintenance": 3})
    assert claim_next(conn, {"batch": QueueClass(name="batch", concurrency=1, weight=1)}, "c") is None
    with pytest.raises(LedgerError, match=r"queue class 'batch': weight must be a positive integer, got 0"):
        claim_next(conn, {"batch": type("Q", (), {"concurrency": 1, "weight": 0})()}, "c")
    with pytest.raises(LedgerError, match="no queue classes"):
        claim_next(conn, {}, "c")


def test_claim_refuses_a_stale_snapshot(ledger_url: str) -> None:
    c = psycopg.connect(ledger_url, row_factory=psycopg.rows.dict_row, autocommit=True)
    c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with pytest.raises(LedgerError, match="needs a READ COMMITTED transaction, the connection uses repeatable read"):
        claim_next(c, queues({"interactive": 1, "batch": 1, "maintenance": 1}), "c")
    c.close()


def storm(url: str, config: dict, workers: int, hold_ms: float) -> list[dict]:
    procs = [python(WORKER, url, json.dumps(config), str(hold_ms), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE) for _ in range(workers)]
    for p in procs:  # every worker imported and connected ...
        assert p.stdout.readline() == "ready\n", p.stderr.read()
    for p in procs:  # ... before any claims
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, [err for _, err in results]
    return [json.loads(out) for out, _ in results]


def test_claim_storm_never_double_claims_nor_exceeds_caps(conn: psycopg.Connection, ledger_url: str) -> None:
    counts = {"interactive": 45, "batch": 30, "maintenance": 15}
    fill(conn, counts)
    config = {"interactive": {"concurrency": 3, "weight": 10}, "batch": {"concurrency": 2, "weight": 5},
              "maintenance": {"concurrency": 1, "weight": 1}}
    results = storm(ledger_url, config, workers=4, hold_ms=4)
    claimed = [j for r in results for j in r["claimed"]]
    assert len(claimed) == len(set(claimed)) == sum(counts.values())
    assert sum(1 for r in results if r["claimed"]) >= 2  # the work really was shared
    seen = Counter()
    for r in results:
        for q, n in r["seen"]:
            assert n <= config[q]["concurrency"], f"{q} had {n} jobs in flight"
            seen[q] = max(seen[q], n)
    assert seen["interactive"] >= 2  # the claimers really overlapped
    rows = conn.execute(
        """SELECT job_id, count(*) FILTER (WHERE to_status = 'submitted') AS submitted,
                  count(*) FILTER (WHERE to_status = 'succeeded') AS succeeded
             FROM job_status_history GROUP BY job_id"""
    ).fetchall()
    assert len(rows) == sum(counts.values()) and all(r["submitted"] == r["succeeded"] == 1 for r in rows)


def test_claim_storm_follows_the_shared_weighted_schedule(conn: psycopg.Connection, ledger_url: str) -> None:
    fill(conn, {"interactive": 20, "batch": 10, "maintenance": 2})
    config = {n: {"concurrency": 100, "weight": w} for n, w in WEIGHTS.items()}
    results = storm(ledger_url, config, workers=4, hold_ms=-1)
    assert sorted(j for r in results for j in r["claimed"]) == sorted(
        str(r["id"]) for r in conn.execute("SELECT id FROM jobs"))
    got = order(conn)
    # Four processes, one schedule: the admission order is exactly the single-claimer order.
    assert Counter(got[:16]) == Counter(got[16:]) == {"interactive": 10, "batch": 5, "maintenance": 1}

