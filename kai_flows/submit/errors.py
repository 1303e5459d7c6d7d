"""What submission raises: SubmitError (or a subclass a caller may act on), one line naming what is at fault."""

from __future__ import annotations


class SubmitError(ValueError):
    """Submission failed or was refused; the message names the pipeline, parameter, queue, tier or workflow.

    ``transient``: the server could not be reached or answered 5xx/429, so the same request may succeed later
    (the coordinator keeps such a job queued); otherwise the request itself was refused.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WaitTimeout(SubmitError):
    """A workflow did not finish within the allowed time (it keeps running; nothing was cancelled)."""


class WorkflowNotFound(SubmitError):
    """The server has no workflow of that name (never created, or deleted); never transient."""
