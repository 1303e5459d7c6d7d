"""The launcher interface (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kai_flows.engine.model import ArtifactDecl, OutputParam, Template, Workflow
from kai_flows.engine.process import ProcessGroups, ProcessOutcome


class Workspace(Protocol):
    """One attempt's files: the paths the step is given (`step_*`) and where they are on this machine (`host_*`)."""

    def step_input(self, decl: ArtifactDecl) -> str: ...
    def host_input(self, decl: ArtifactDecl) -> Path: ...
    def step_output_artifact(self, decl: ArtifactDecl) -> str: ...
    def step_output_parameter(self, op: OutputParam) -> str: ...

    def host_output(self, step_path: str) -> Path | None:
        """Where an output the step wrote at `step_path` is on this machine once the step has exited (None when
        it did not write it)."""
        ...

    def close(self) -> None: ...


@dataclass
class LaunchRequest:
    template: Template
    argv: list[str]  # command + args, variables already substituted
    env: dict[str, str]  # the template's env (variables substituted), plus what the engine adds
    stdout_path: Path
    log_path: Path
    groups: ProcessGroups
    pod_name: str
    gpu_hidden: bool = False  # a GPU step on its CPU path: hide the GPUs


class Launcher(Protocol):
    name: str
    uses_template_env: bool  # whether the template's `env` reaches the step (and so is substituted)

    def check(self, wf: Workflow) -> None:
        """Refuse, by name and field path, before anything runs, what this launcher cannot honour."""
        ...

    def honoured(self, field_path: str) -> bool:
        """Whether a cluster-only field the loader recorded is acted on by this launcher."""
        ...

    def workspace(self, template: Template, scratch: Path, pod_name: str) -> Workspace: ...

    def run(self, ws: Workspace, req: LaunchRequest) -> ProcessOutcome:
        """Run the step to its end (or deadline); raises OSError when it cannot be started at all."""
        ...

    def close(self) -> None: ...
