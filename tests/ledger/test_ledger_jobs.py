"""The ledger API: enqueue, the status life cycle, idempotent events, history, outputs, bad input."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from kai_flows.ledger import jobs
from kai_flows.ledger.errors import InvalidTransition, JobNotFound, LedgerError, UnknownQueueClass, UnknownTier
from kai_flows.ledger.models import TRANSITIONS, JobOutput, JobStatus
from kai_flows.policy import load_policy

S = JobStatus


def out(name: str, data: bytes) -> JobOutput:
    return JobOutput(f"s3://kai/{name}", hashlib.sha256(data).hexdigest(), len(data))


def test_enqueue_takes_queue_and_priority_from_the_tier(conn: psycopg.Connection) -> None:
    policy = load_policy()
    job = jobs.enqueue(conn, "reconstruction", {"max_image_size": 1600}, tier="enterprise",
                       input_uri="s3://in/photos/")
    tier = policy.tiers["enterprise"]
    assert job.queue_class == tier.queue
    assert job.priority == policy.priority_classes[tier.priority_class].value
    assert (job.status, job.attempts, job.parameters) == (S.QUEUED, 0, {"max_image_size": 1600})
    again = jobs.get_job(conn, job.id)
    assert again == job
    assert [(h.from_status, h.to_status) for h in jobs.history(conn, job.id)] == [(None, S.QUEUED)]
    explicit = jobs.enqueue(conn, "reconstruction", tier="free", queue_class="maintenance", priority=7)
    assert (explicit.queue_class, explicit.priority) == ("maintenance", 7)


def test_unknown_tier_or_queue_class_is_a_clear_error(conn: psycopg.Connection) -> None:
    with pytest.raises(UnknownTier, match=r"unknown tier 'platinum'; known: enterprise, free, internal, pro"):
        jobs.enqueue(conn, "reconstruction", tier="platinum")
    with pytest.raises(UnknownQueueClass, match=r"unknown queue class 'urgent'; known: batch, interactive"):
        jobs.enqueue(conn, "reconstruction", tier="pro", queue_class="urgent")
    with pytest.raises(LedgerError, match=r"parameters must be a JSON object, got list"):
        jobs.enqueue(conn, "reconstruction", [1, 2], tier="pro")  # type: ignore[arg-type]
    assert jobs.list_jobs(conn) == []


def test_full_life_cycle_records_history_timestamps_and_outputs(conn: psycopg.Connection) -> None:
    job = jobs.enqueue(conn, "reconstruction", tier="pro")
    jobs.transition(conn, job.id, S.SUBMITTED, actor="c1")
    job = jobs.set_workflow(conn, job.id, "reconstruction-abc12")
    job = jobs.transition(conn, job.id, "running", actor="c1")
    assert job.started_at is not None and job.finished_at is None
    o = [out("model.glb", b"glb"), out("model.usdz", b"usdz")]
    job = jobs.transition(conn, job.id, S.SUCCEEDED, outputs=o, actor="c1")
    assert job.status == S.SUCCEEDED and job.finished_at >= job.started_at >= job.submitted_at
    assert job.workflow_name == "reconstruction-abc12" and job.claimed_by is None
    assert jobs.outputs(conn, job.id) == sorted(o, key=lambda x: x.uri)
    steps = [(h.from_status, h.to_status, h.actor) for h in jobs.history(conn, job.id)]
    assert steps == [(None, S.QUEUED, None), (S.QUEUED, S.SUBMITTED, "c1"), (S.SUBMITTED, S.RUNNING, "c1"),
                     (S.RUNNING, S.SUCCEEDED, "c1")]


def test_repeated_event_is_a_noop(conn: psycopg.Connection) -> None:
    job = jobs.enqueue(conn, "reconstruction", tier="pro")
    for event in (S.SUBMITTED, S.RUNNING):
        for _ in range(3):
            jobs.transition(conn, job.id, event)
            jobs.set_workflow(conn, job.id, "wf-1")
    o = [out("a.ply", b"points")]
    first = jobs.transition(conn, job.id, S.FAILED, error="step sfm: exit code 1", outputs=o)
    second = jobs.transition(conn, job.id, S.FAILED, error="something else", outputs=o)
    assert second == first and second.error == "step sfm: exit code 1"
    assert [h.to_status for h in jobs.history(conn, job.id)] == [S.QUEUED, S.SUBMITTED, S.RUNNING, S.FAILED]
    assert len(jobs.outputs(conn, job.id)) == 1


@pytest.mark.parametrize(("path", "bad"), [
    ([], S.RUNNING),
    ([], S.SUCCEEDED),
    ([S.SUBMITTED, S.RUNNING], S.QUEUED),
    ([S.SUBMITTED, S.RUNNING, S.SUCCEEDED], S.FAILED),
    ([S.SUBMITTED, S.RUNNING, S.SUCCEEDED], S.QUEUED),
    ([S.CANCELLED], S.SUBMITTED),
    ([S.SUBMITTED, S.FAILED], S.RUNNING),
])
def test_invalid_transitions_raise_and_change_nothing(conn: psycopg.Connection, path: list[S], bad: S) -> None:
    job = jobs.enqueue(conn, "reconstruction", tier="pro")
    for s in path:
        job = jobs.transition(conn, job.id, s)
    with pytest.raises(InvalidTransition, match=rf"job {job.id}: cannot go from {job.status} to {bad}"):
        jobs.transition(conn, job.id, bad)
    assert jobs.get_job(conn, job.id) == job
    assert len(jobs.history(conn, job.id)) == len(path) + 1


def test_retry_increments_attempts_and_keeps_each_attempts_outputs(conn: psycopg.Connection) -> None:
    job = jobs.enqueue(conn, "reconstruction", tier="pro")
    jobs.transition(conn, job.id, S.SUBMITTED)
    jobs.set_workflow(conn, job.id, "wf-a0")
    jobs.transition(conn, job.id, S.FAILED, error="oom", outputs=[out("partial.ply", b"p")])
    job = jobs.retry(conn, job.id)
    assert (job.status, job.attempts, job.workflow_name, job.error, job.finished_at) == (S.QUEUED, 1, None, None, None)
    assert jobs.retry(conn, job.id) == job  # the same retry event again: still attempt 1
    jobs.transition(conn, job.id, S.SUBMITTED)
    jobs.set_workflow(conn, job.id, "wf-a1")
    jobs.transition(conn, job.id, S.SUCCEEDED, outputs=[out("model.glb", b"g")])
    assert [o.uri for o in jobs.outputs(conn, job.id)] == ["s3://kai/model.glb"]
    assert [o.uri for o in jobs.outputs(conn, job.id, attempt=0)] == ["s3://kai/partial.ply"]
    assert [h.attempt for h in jobs.history(conn, job.id)] == [0, 0, 0, 1, 1, 1]


def test_cancel_from_queued_submitted_running(conn: psycopg.Connection) -> None:
    for path in ([], [S.SUBMITTED], [S.SUBMITTED, S.RUNNING]):
        job = jobs.enqueue(conn, "reconstruction", tier="pro")
        for s in path:
            jobs.transition(conn, job.id, s)
        job = jobs.cancel(conn, job.id, actor="operator", reason="user asked")
        assert job.status == S.CANCELLED and job.error == "user asked" and job.finished_at is not None
        with pytest.raises(InvalidTransition, match="cannot go from cancelled to queued"):
            jobs.retry(conn, job.id)


def test_database_enforces_the_life_cycle_and_append_only_history(conn: psycopg.Connection) -> None:
    rows = conn.execute("SELECT from_status, to_status FROM job_status_transitions").fetchall()
    assert {(r["from_status"], r["to_status"]) for r in rows} == {(a, b) for a, bs in TRANSITIONS.items() for b in bs}
    job = jobs.enqueue(conn, "reconstruction", tier="pro")
    with pytest.raises(psycopg.errors.CheckViolation, match="invalid status transition queued -> succeeded"):
        conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = %s", (job.id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM job_status_history WHERE job_id = %s", (job.id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE job_status_history SET to_status = 'failed'")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO job_outputs (job_id, attempt, uri, sha256, size) VALUES (%s, 0, 'x', 'nothex', 1)",
                     (job.id,))


def test_bad_ids_and_outputs(conn: psycopg.Connection) -> None:
    with pytest.raises(JobNotFound, match=r"job id 'nope' is not a UUID"):
        jobs.get_job(conn, "nope")
    with pytest.raises(JobNotFound, match=r"no job 00000000-0000-0000-0000-000000000000"):
        jobs.transition(conn, "00000000-0000-0000-0000-000000000000", S.SUBMITTED)
    job = jobs.enqueue(conn, "reconstruction", tier="pro")
    with pytest.raises(InvalidTransition, match=r"unknown job status 'done'"):
        jobs.transition(conn, job.id, "done")
    jobs.transition(conn, job.id, S.SUBMITTED)
    with pytest.raises(LedgerError, match=r"output s3://x: sha256 must be 64 lowercase hex digits"):
        jobs.transition(conn, job.id, S.SUCCEEDED, outputs=[JobOutput("s3://x", "abc", 1)])
    assert jobs.get_job(conn, job.id).status == S.SUBMITTED  # the whole event rolled back
    jobs.set_workflow(conn, job.id, "wf-1")
    with pytest.raises(InvalidTransition, match="cannot take workflow wf-2"):
        jobs.set_workflow(conn, job.id, "wf-2")
