"""Steps as host processes: the template's command in the engine's own environment (the default runtime).

What it honours, and what it refuses by name (field path) before anything runs, because a host process cannot
do it the way a pod does:
- the template's `env` (variables substituted) on top of the engine's environment; values under an emptyDir's
  mountPath point into the attempt's own folder for that volume;
- an emptyDir mounted at `/tmp`: the attempt's own folder, given as TMPDIR (and to env values under /tmp);
  an emptyDir anywhere else, any other volume kind, sidecars, initContainers, `workingDir` and env taken from
  the cluster (valueFrom, envFrom) are refused: use `--runtime container`, or leave them out;
- paths: a step is given its declared input/output artifact and output parameter paths through their
  placeholders (`{{inputs.artifacts.x.path}}`, ...), which point into the attempt's folder; a template whose
  command, args or env name a declared path literally (`echo hi > /tmp/out.txt`) is refused, since on this
  machine that path is shared by every step and the host (the container runtime honours literal paths).
The image is recorded, not used; securityContext and resources are recorded in run.json's ignoredFields (the
peak memory is compared with the limit and reported). Entry-point steps are forked from a warm process that
already imported their module, started in the template's fixed env, when warm starts are on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from kai_flows.engine.launch.base import LaunchRequest
from kai_flows.engine.model import ArtifactDecl, OutputParam, Template, TemplateError, Workflow
from kai_flows.engine.process import ProcessOutcome, run_process
from kai_flows.engine.warm import ZygoteKey, ZygotePool, ZygoteUnavailable, warm_module

PRIVATE_TMP = "/tmp"  # the one mountPath a host process can be given privately (through TMPDIR)


def _placeholder_used(t: Template, kind: str, name: str) -> bool:
    pattern = re.compile(r"\{\{\s*" + re.escape(f"{kind}.{name}.path") + r"\s*\}\}")
    return any(pattern.search(text) for text in (*t.command, *t.args, *(e.value for e in t.pod.env)))


def check_process_template(t: Template, where: str) -> None:
    """Raise TemplateError naming the first field of container template `t` a host process cannot honour."""
    pod = t.pod
    for feature in pod.cluster_features:
        raise TemplateError(f"{feature}: the process runtime runs one process per step, never "
                            f"{feature.rsplit('.', 1)[-1]}; use --runtime container or leave them out")
    if pod.working_dir:
        raise TemplateError(f"{where}.container.workingDir: {pod.working_dir!r} is a path in the image; the process "
                            "runtime runs steps in their scratch folder (use --runtime container)")
    for e in pod.env:
        if e.source:
            raise TemplateError(f"{where}.container.env[{e.name}]: {e.source} takes its value from the cluster; the "
                                "process runtime supports literal values only")
    for m in pod.mounts:
        at = f"{where}.container.volumeMounts[{m.name}]"
        vol = pod.volume(m.name)
        if vol is None or vol.kind != "emptyDir" or vol.medium:
            kind = "missing" if vol is None else vol.kind + (f" (medium {vol.medium})" if vol.medium else "")
            raise TemplateError(f"{at}: volume {m.name!r} is {kind}; the process runtime gives a step only an "
                                f"emptyDir at {PRIVATE_TMP} (use --runtime container)")
        if m.mount_path.rstrip("/") != PRIVATE_TMP or m.sub_path:
            raise TemplateError(f"{at}.mountPath: {m.mount_path!r}: the process runtime gives a step a private "
                                f"folder only for an emptyDir mounted at {PRIVATE_TMP} (through TMPDIR); use "
                                "--runtime container")
    texts = (*t.command, *t.args, *(e.value for e in t.pod.env))
    declared = [("inputs.artifacts", d.name, d.path) for d in t.input_artifacts]
    declared += [("outputs.artifacts", d.name, d.path) for d in t.output_artifacts]
    declared += [("outputs.parameters", o.name, o.path) for o in t.output_params]
    for kind, name, path in declared:
        # named literally and not through the placeholder: the step would use this machine's path
        if any(path in text for text in texts) and not _placeholder_used(t, kind, name):
            raise TemplateError(
                f"{where}.{kind}[{name}].path: the step is not given {{{{{kind}.{name}.path}}}}, so it uses "
                f"{path!r} literally; on this machine that path is shared by every step and the host. Pass the "
                "placeholder in the command, args or env, or run with --runtime container")


def _fixed_env(t: Template) -> tuple[tuple[str, str], ...]:
    """The template's env values that are the same for every attempt (no variable, no path into a volume)."""
    return tuple(sorted((e.name, e.value) for e in t.pod.env
                        if "{{" not in e.value and not e.value.startswith(PRIVATE_TMP)))


class HostWorkspace:
    def __init__(self, scratch: Path, template: Template) -> None:
        self.scratch = scratch
        self.inputs = scratch / "inputs" / "artifacts"
        self.out_artifacts = scratch / "outputs" / "artifacts"
        self.out_parameters = scratch / "outputs" / "parameters"
        for d in (self.inputs, self.out_artifacts, self.out_parameters):
            d.mkdir(parents=True)
        self.tmp: Path | None = None  # the attempt's own folder for an emptyDir at /tmp
        if any(m.mount_path.rstrip("/") == PRIVATE_TMP for m in template.pod.mounts):
            self.tmp = scratch / "volumes" / "tmp"
            self.tmp.mkdir(parents=True)

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
    uses_template_env = True

    def __init__(self, env: dict[str, str], cwd: Path, warm_starts: bool = True) -> None:
        self.env = env
        self.zygotes = ZygotePool(env, cwd, enabled=warm_starts)

    def check(self, wf: Workflow) -> None:
        keys: set[ZygoteKey] = set()
        for t in wf.templates.values():
            if t.kind != "container":
                continue
            check_process_template(t, f"{wf.source}: spec.templates[{t.name}]")
            if (m := warm_module([*t.command, *t.args])) is not None:
                keys.add((m, _fixed_env(t)))
        # Start the warm servers now, so their imports overlap the input upload instead of delaying a step.
        self.zygotes.prestart(keys)

    def honoured(self, field_path: str) -> bool:
        # env and the emptyDir at /tmp are acted on (check_process_template refuses the rest)
        return field_path.endswith((".container.env", ".container.volumeMounts", "spec.volumes", "].volumes"))

    def workspace(self, template: Template, scratch: Path, pod_name: str) -> HostWorkspace:
        return HostWorkspace(scratch, template)

    def run(self, ws: HostWorkspace, req: LaunchRequest) -> ProcessOutcome:  # type: ignore[override]
        argv = list(req.argv)
        module = warm_module(argv)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = dict(self.env)
        for name, value in req.env.items():  # a value under the emptyDir at /tmp points into the attempt's own
            if ws.tmp is not None and (value == PRIVATE_TMP or value.startswith(PRIVATE_TMP + "/")):
                value = str(ws.tmp) + value[len(PRIVATE_TMP):]
            env[name] = value
        if ws.tmp is not None:
            env["TMPDIR"] = str(ws.tmp)
        if req.gpu_hidden:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the declared CPU fallback
        zygote = self.zygotes.get((module, _fixed_env(req.template))) if module else None
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
