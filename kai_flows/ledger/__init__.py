"""The PostgreSQL job ledger: migrations, jobs and their life cycle, admission by queue class, the coordinator.

The coordinator drives a WorkflowRunner (runner.py); make_runner (factory.py) builds the local or Argo one.
"""

from kai_flows.ledger.claim import claim_next
from kai_flows.ledger.db import connect
from kai_flows.ledger.errors import (
    BackendError,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    MigrationError,
    UnknownQueueClass,
    UnknownTier,
    WorkflowNotFound,
)
from kai_flows.ledger.factory import make_runner
from kai_flows.ledger.jobs import (
    cancel,
    enqueue,
    enqueue_once,
    get_job,
    history,
    list_jobs,
    outputs,
    retry,
    transition,
)
from kai_flows.ledger.migrate import MigrationReport, migrate
from kai_flows.ledger.migrate import status as migration_status
from kai_flows.ledger.models import Job, JobOutput, JobStatus
from kai_flows.ledger.runner import RunStatus, WorkflowRunner

__all__ = [
    "BackendError", "DatabaseUnavailable", "IdempotencyConflict", "InvalidTransition", "Job", "JobNotFound",
    "JobOutput", "JobStatus", "LedgerError", "MigrationError", "MigrationReport", "RunStatus", "UnknownQueueClass",
    "UnknownTier", "WorkflowNotFound", "WorkflowRunner", "cancel", "claim_next", "connect", "enqueue", "enqueue_once",
    "get_job", "history", "list_jobs", "make_runner", "migrate", "migration_status", "outputs", "retry", "transition",
]
