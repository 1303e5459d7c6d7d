"""How a step starts: one interface, one implementation per way of running it.

The executor and `pod.run_attempt` never branch on the runtime; they ask the launcher for a `Workspace` (where the
step sees its inputs and outputs, and where those are on this machine) and to `run` the step's argv in it.
- `ProcessLauncher`: a host process of the template's command (default; fast, no images), optionally forked from a
  warm process that already imported the step's module (`warm.py`);
- `ContainerLauncher`: the template's image in a container with its pod's security context, limits, env and
  emptyDir volumes (`--runtime container`).
"""

from __future__ import annotations

from kai_flows.engine.launch.base import Launcher, LaunchRequest, Workspace
from kai_flows.engine.launch.host import ProcessLauncher

RUNTIMES = ("process", "container")


def make_launcher(runtime: str, **kwargs: object) -> Launcher:
    """The launcher of `runtime` ("process" or "container")."""
    if runtime == "process":
        return ProcessLauncher(**kwargs)  # type: ignore[arg-type]
    from kai_flows.engine.model import EngineError

    if runtime == "container":
        from kai_flows.containers import ContainerEngineError
        from kai_flows.engine.launch.container import ContainerLauncher

        try:
            return ContainerLauncher(**kwargs)  # type: ignore[arg-type]
        except ContainerEngineError as e:
            raise EngineError(f"--runtime container: {e}") from None

    raise EngineError(f"unknown runtime {runtime!r} (use one of: {', '.join(RUNTIMES)})")


__all__ = ["RUNTIMES", "LaunchRequest", "Launcher", "ProcessLauncher", "Workspace", "make_launcher"]
