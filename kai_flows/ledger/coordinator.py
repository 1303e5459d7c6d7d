"""The coordinator: claim jobs, submit them, follow them, record every transition.

Crash safety rests on three facts. (1) A claim marks the job `submitted` under this coordinator's lease before
anything is submitted. (2) The runner labels a workflow with the job id and attempt as it creates it, before
the ledger records the name. (3) A restarted coordinator (or another one, once the lease ran out) adopts the
in-flight jobs, finds an unrecorded workflow by its label, submits only when there is none, and follows the
rest. Transitions are idempotent, so replaying the last poll records nothing twice.

Back-pressure (holds.py): a workflow whose pod the scheduler cannot place for `unschedulable_after` seconds holds
its queue class's admission for as long as that lasts; a submission the backend fails (unreachable, 5xx, 429,
quota) holds the class for `refusal_hold` seconds. Admitting more into a constrained cluster would only lengthen
the line of Pending pods; the held job waits in the ledger instead, where its place in the queue is kept.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from uuid import UUID

import psycopg

from kai_flows.ledger import holds, jobs
from kai_flows.ledger.claim import QueueLike, adopt, claim_next, renew
from kai_flows.ledger.db import connect
from kai_flows.ledger.errors import (
    BackendError,
    DatabaseUnavailable,
    InvalidTransition,
    LedgerError,
    WorkflowNotFound,
)
from kai_flows.ledger.metrics import LedgerMetrics
from kai_flows.ledger.models import TERMINAL, Job, JobStatus
from kai_flows.ledger.runner import RunStatus, WorkflowRunner

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(
        self,
        database_url: str,
        backend: WorkflowRunner,
        queues: Mapping[str, QueueLike] | None = None,
        poll_interval: float = 1.0,
        *,
        claimer: str | None = None,
        lease_seconds: float = 30.0,
        metrics: LedgerMetrics | None = None,
        unschedulable_after: float = 60.0,
        refusal_hold: float = 30.0,
    ) -> None:
        if queues is None:
            from kai_flows.policy import load_policy

            queues = load_policy().queues
        if lease_seconds < 3 * poll_interval:
            raise LedgerError(
                f"lease of {lease_seconds}s is too short for a poll interval of {poll_interval}s (needs 3x or more)"
            )
        self.database_url = database_url
        self.backend = backend
        self.queues = queues
        self.poll_interval = poll_interval
        self.claimer = claimer or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_seconds = lease_seconds
        self.metrics = metrics or LedgerMetrics()
        self.unschedulable_after = unschedulable_after
        self.refusal_hold = refusal_hold
        self.active: dict[UUID, Job] = {}
        self._unschedulable: dict[str, str] = {}  # queue class -> why, found while following this pass
        self._first_unschedulable: dict[UUID, float] = {}  # job -> when this coordinator first saw it unschedulable
        self._refused: set[str] = set()  # classes this coordinator holds after a failed submission
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.database_url)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def serve_metrics(self, port: int, addr: str = "0.0.0.0") -> int:
        return self.metrics.serve(port, addr).server_port

    # -- one pass -------------------------------------------------------------------------------------------
    def run_once(self) -> None:
        conn = self.conn
        for job in adopt(conn, self.claimer, lease_seconds=self.lease_seconds, following=list(self.active)):
            log.info("adopted job %s (%s, workflow %s)", job.id, job.status, job.workflow_name)
            if job.status == JobStatus.CANCELLED:  # cancelled while its owner was gone: its workflow still runs
                self._stop_workflow(job)
                continue
            self._track(job)  # one without a workflow name is (re)submitted by _follow
        self._renew()
        self._unschedulable = {}
        for job in list(self.active.values()):
            self._follow(job)
        self._hold_unschedulable()
        while (job := claim_next(conn, self.queues, self.claimer, lease_seconds=self.lease_seconds)) is not None:
            log.info("admitted job %s from %s", job.id, job.queue_class)
            self.metrics.admitted(job)
            self._track(self._submit(job))
        self.metrics.refresh(conn, self.queues)

    def _hold_unschedulable(self) -> None:
        for queue_class, why in self._unschedulable.items():
            log.warning("holding admission of %s: %s", queue_class, why)
            holds.hold(self.conn, queue_class, "unschedulable", why, held_by=self.claimer,
                       seconds=max(3 * self.poll_interval, 5.0))
        holds.release(self.conn, held_by=self.claimer, reason="unschedulable", keep=self._unschedulable)

    def _track(self, job: Job | None) -> None:
        if job is not None and job.status not in TERMINAL:
            self.active[job.id] = job

    def _renew(self) -> None:
        mine = renew(self.conn, self.claimer, list(self.active), lease_seconds=self.lease_seconds)
        for job_id in set(self.active) - mine:
            job = jobs.get_job(self.conn, job_id)
            self.active.pop(job_id)
            if job.status == JobStatus.CANCELLED and job.stop_workflow:
                self._stop_workflow(job)
            elif job.status not in TERMINAL:
                log.warning("job %s was taken over by %s", job_id, job.claimed_by)

    def _stop_workflow(self, job: Job) -> None:
        """Stop a cancelled job's workflow (found by its label when the ledger never recorded its name)."""
        try:
            name = job.workflow_name or self.backend.find_by_label(job.id, job.attempts)
        except Exception as e:  # the backend is unreachable: stop_workflow stays set, try again next pass
            log.warning("looking up the workflow of cancelled job %s failed, will retry: %s", job.id, e)
            return
        if name is not None:
            log.info("job %s was cancelled: cancelling workflow %s", job.id, name)
            if not self._cancel_workflow(name):
                return
        jobs.workflow_stopped(self.conn, job.id)

    def _cancel_workflow(self, name: str) -> bool:
        """True once the workflow is stopped or gone; False when the backend could not be reached (retry)."""
        try:
            self.backend.cancel(name)
        except WorkflowNotFound:  # nothing left to stop
            log.info("workflow %s to cancel is already gone", name)
        except Exception as e:  # the backend is unreachable: the ledger says cancelled; stopping is retried
            log.warning("cancelling workflow %s failed, will retry: %s", name, e)
            return False
        return True

    def _submit(self, job: Job) -> Job | None:
        """Make sure the job's workflow exists exactly once and the ledger names it."""
        try:
            name = self.backend.find_by_label(job.id, job.attempts) or self.backend.submit(job)
        except BackendError as e:  # the backend refused the job itself: final
            return self._record(job, JobStatus.FAILED, error=f"submission failed: {e}")
        except Exception as e:  # the backend is unreachable or flaky: keep the job, try again next pass
            log.warning("submitting job %s failed, will retry; holding %s for %.0fs: %s",
                        job.id, job.queue_class, self.refusal_hold, e)
            holds.hold(self.conn, job.queue_class, "backend_refused", f"submitting job {job.id}: {e}",
                       held_by=self.claimer, seconds=self.refusal_hold)
            self._refused.add(job.queue_class)
            return job
        if job.queue_class in self._refused:  # a submission went through: no write on the usual path
            holds.release(self.conn, held_by=self.claimer, reason="backend_refused", only={job.queue_class})
            self._refused.discard(job.queue_class)
        try:
            return jobs.set_workflow(self.conn, job.id, name)
        except InvalidTransition:  # cancelled (or taken over) while we were submitting
            current = jobs.get_job(self.conn, job.id)
            if current.status == JobStatus.CANCELLED:
                log.info("job %s was cancelled during submission: cancelling workflow %s", job.id, name)
                if self._cancel_workflow(name):
                    jobs.workflow_stopped(self.conn, job.id)
            return None

    def _follow(self, job: Job) -> None:
        if job.workflow_name is None:
            self._track(self._submit(job))
            return
        try:
            status = self.backend.status(job.workflow_name)
        except WorkflowNotFound as e:  # deleted behind our back: the job's outcome is lost for good
            log.warning("workflow %s of job %s is gone: %s", job.workflow_name, job.id, e)
            self._record(job, JobStatus.FAILED, error=str(e))
            return
        except BackendError as e:  # it ended, but its outcome cannot be read (e.g. an output missing from S3)
            self._record(job, JobStatus.FAILED, error=str(e))
            return
        except Exception as e:
            log.warning("reading workflow %s failed, will retry: %s", job.workflow_name, e)
            return
        self._note_unschedulable(job, status)
        if status.phase == "Running":
            self._track(self._record(job, JobStatus.RUNNING))
        elif status.phase == "Succeeded":
            self._record(job, JobStatus.SUCCEEDED, outputs=status.outputs)
        elif status.phase in ("Failed", "Error"):
            why = status.message or f"workflow {job.workflow_name} ended {status.phase}"
            self._record(job, JobStatus.FAILED, error=why)

    def _note_unschedulable(self, job: Job, status: RunStatus) -> None:
        if not status.unschedulable:
            self._first_unschedulable.pop(job.id, None)
            return
        first = self._first_unschedulable.setdefault(job.id, time.monotonic())
        waited = time.monotonic() - first
        if status.unschedulable_since is not None:  # the runner knows since when: another replica may have seen it
            waited = max(waited, (datetime.now(UTC) - status.unschedulable_since).total_seconds())
        if waited >= self.unschedulable_after:
            self._unschedulable.setdefault(job.queue_class, f"workflow {job.workflow_name}: {status.unschedulable}")

    def _record(self, job: Job, to: JobStatus, **event: object) -> Job | None:
        try:
            updated = jobs.transition(self.conn, job.id, to, actor=self.claimer, **event)  # type: ignore[arg-type]
        except InvalidTransition as e:  # e.g. cancelled in the ledger while the workflow finished
            log.warning("%s", e)
            self.active.pop(job.id, None)
            return None
        if updated.status in TERMINAL:
            self.active.pop(job.id, None)
            self._first_unschedulable.pop(job.id, None)
            self.metrics.finished(updated)
            log.info("job %s %s", job.id, updated.status)
        return updated

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Poll until `stop` is set; a lost database connection is logged and retried, not fatal."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.run_once()
            except (psycopg.OperationalError, DatabaseUnavailable) as e:
                log.error("database unavailable, retrying in %.1fs: %s", self.poll_interval, e)
                self.close()
            stop.wait(self.poll_interval)
        self.close()

