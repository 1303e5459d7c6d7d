"""Steps as host processes: the template's command in the engine's own environment (the default runtime).

The image is recorded, not used; the step sees folders of the engine's scratch space in its path placeholders;
the template's env, securityContext and volumes are cluster-only here (recorded in run.json's ignoredFields).
Entry-point steps are forked from a warm process that already imported their module when warm starts are on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kai_flows.engine.launch.base import LaunchRequest
from kai_flows.engine.model import ArtifactDecl, OutputParam, Template, Workflow
from kai_flows.engine.process import ProcessOutcome, run_process
from kai_flows.engine.warm import ZygotePool, ZygoteUnavailable, warm_module


class HostWorkspace:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.inputs = scratch / "inputs" / "artifacts"
        self.out_artifacts = scratch / "outputs" / "artifacts"
        self.out_parameters = scratch / "outputs" / "parameters"
        for d in (self.inputs, self.out_artifacts, self.out_parameters):
            d.mkdir(parents=True)

    def step_input(self, decl: ArtifactDecl) -> str:
        return str(self.host_input(decl))

    def host_input(self, decl: ArtifactDecl) -> Path:
        return self.inputs / decl.name

    def step_output_artifact(self, decl: ArtifactDecl) -> str:
        return str(self.out_artifacts / decl.name)

    def step_output_parameter(self, op: OutputParam) -> str:
        return str(self.out_parameters / op.name)

    def host_output(self, step_path: str) -> Path | None:
        path = Path(step_path)
        return path if path.exists() else None

    def close(self) -> None:
        pass


class ProcessLauncher:
    name = "process"
    uses_template_env = False  # the template's env is cluster-only here (recorded in ignoredFields)

    def __init__(self, env: dict[str, str], cwd: Path, warm_starts: bool = True) -> None:
        self.env = env
        self.zygotes = ZygotePool(env, cwd, enabled=warm_starts)

    def check(self, wf: Workflow) -> None:
        # Start the warm servers now, so their imports overlap the input upload instead of delaying a step.
        self.zygotes.prestart({m for t in wf.templates.values() if t.kind == "container"
                               if (m := warm_module([*t.command, *t.args])) is not None})

    def honoured(self, field_path: str) -> bool:
        return False

    def workspace(self, template: Template, scratch: Path, pod_name: str) -> HostWorkspace:
        return HostWorkspace(scratch)

    def run(self, ws: HostWorkspace, req: LaunchRequest) -> ProcessOutcome:  # type: ignore[override]
        argv = list(req.argv)
        module = warm_module(argv)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = dict(self.env)
        if req.gpu_hidden:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the declared CPU fallback
        zygote = self.zygotes.get(module) if module else None
        if zygote is not None:
            try:
                outcome = zygote.run(argv[3:], cwd=ws.scratch, env=env, stdout_path=req.stdout_path,
                                     log_path=req.log_path, deadline_s=req.template.deadline, groups=req.groups)
                outcome.warm_start = True
                return outcome
            except ZygoteUnavailable:
                pass  # start it cold below
        return run_process(argv, cwd=ws.scratch, env=env, stdout_path=req.stdout_path, log_path=req.log_path,
                           deadline_s=req.template.deadline, groups=req.groups)

    def close(self) -> None:
        self.zygotes.close()
