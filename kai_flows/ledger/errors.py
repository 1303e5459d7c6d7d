"""The ledger's errors: each one a single line naming the thing at fault."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on bad input or a bad database state."""


class DatabaseUnavailable(LedgerError):
    """The database cannot be reached or refuses the connection (host, port, role, password, database)."""


class MigrationError(LedgerError):
    """A migration file or the applied history is inconsistent, or a migration failed to apply."""


class JobNotFound(LedgerError):
    """No job has the given id."""


class InvalidTransition(LedgerError):
    """A status change that the job's life cycle does not allow."""


class UnknownQueueClass(LedgerError):
    """A queue class the policy does not define."""


class UnknownTier(LedgerError):
    """A tier the policy does not define."""


class BackendError(LedgerError):
    """A coordinator backend refused or failed an operation."""


class WorkflowNotFound(BackendError):
    """A runner has no workflow of that name (never created, or deleted): its outcome cannot be known."""


class IdempotencyConflict(LedgerError):
    """An idempotency key already used for a different request."""
