"""The runner the coordinator's `--backend` names. The one ledger module that imports a runner module.

The runners are imported inside `make_runner`, not at the top: importing the ledger (or this module) must not
pull in the engine, Kubernetes or Hera for a runner that is not used.
"""

from __future__ import annotations

import importlib
import os

from kai_flows.ledger.errors import BackendError
from kai_flows.ledger.runner import WorkflowRunner

KINDS = ("local", "argo")


def make_runner(kind: str, *, state_dir: str | None = None) -> WorkflowRunner:
    """`local`: the local engine, state in `state_dir`, $KAI_LOCAL_BACKEND_DIR or the engine cache; `argo`: a
    cluster through kai_flows.submit (cluster and S3 from the environment); `module:callable`: a runner of one's
    own (the tests' fake), made by `callable(state_dir=state_dir)`."""
    if kind == "local":
        from kai_flows.engine.runner import cache_dir
        from kai_flows.ledger.local_backend import LocalEngineBackend

        state = state_dir or os.environ.get("KAI_LOCAL_BACKEND_DIR") or str(cache_dir() / "coordinator")
        return LocalEngineBackend(state)
    if kind == "argo":
        from kai_flows.ledger.argo_backend import ArgoBackend

        return ArgoBackend.from_env()
    if ":" in kind:
        return _custom_runner(kind, state_dir)
    raise BackendError(f"unknown backend {kind!r}; known: {', '.join(KINDS)} (or module:callable)")


def _custom_runner(spec: str, state_dir: str | None) -> WorkflowRunner:
    module_name, _, attr = spec.partition(":")
    try:
        runner = getattr(importlib.import_module(module_name), attr)(state_dir=state_dir)
    except (ImportError, AttributeError, TypeError) as e:  # a wrong spec: one line at start-up, not a traceback
        raise BackendError(f"backend {spec!r}: {e}") from None
    if not isinstance(runner, WorkflowRunner):  # checked now, not on the first job
        raise BackendError(f"backend {spec!r} made a {type(runner).__name__}, which is not a WorkflowRunner")
    return runner
