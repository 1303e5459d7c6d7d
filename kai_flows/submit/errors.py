"""The one exception submission raises: a one-line message naming what is at fault."""

from __future__ import annotations


class SubmitError(ValueError):
    """Submission failed or was refused; the message names the pipeline, parameter, queue, tier or workflow."""


class WaitTimeout(SubmitError):
    """A workflow did not finish within the allowed time (it keeps running; nothing was cancelled)."""
