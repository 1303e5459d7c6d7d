"""The PostgreSQL job ledger: migrations, jobs and their life cycle, admission by queue class, the coordinator."""

from kai_flows.ledger.claim import claim_next
from kai_flows.ledger.db import connect
from kai_flows.ledger.errors import (
    BackendError,
    DatabaseUnavailable,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    MigrationError,
    UnknownQueueClass,
    UnknownTier,
)
from kai_flows.ledger.jobs import cancel, enqueue, get_job, history, list_jobs, outputs, retry, transition
from kai_flows.ledger.migrate import MigrationReport, migrate
from kai_flows.ledger.migrate import status as migration_status
from kai_flows.ledger.models import Job, JobOutput, JobStatus

__all__ = [
    "BackendError", "DatabaseUnavailable", "InvalidTransition", "Job", "JobNotFound", "JobOutput", "JobStatus",
    "LedgerError", "MigrationError", "MigrationReport", "UnknownQueueClass", "UnknownTier", "cancel", "claim_next",
    "connect", "enqueue", "get_job", "history", "list_jobs", "migrate", "migration_status", "outputs", "retry",
    "transition",
]
