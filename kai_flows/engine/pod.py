"""One attempt of one container template (a worker thread calls `run_attempt`); the launcher decides how it
starts (a host process, a warm fork, or the template's image in a container: see `launch/`).

How local outcomes map to Argo phases (the rule the executor documents and the tests check):
- the process exits non-zero, is killed by a signal it did not get from the engine, is OOM-killed over its memory
  limit (container runtime: "OOMKilled (exit code 137)", as Argo reports the pod), or passes its
  `activeDeadlineSeconds`/`timeout` (the engine kills it)  -> **Failed**, as Argo marks a pod whose main container
  fails or exceeds its deadline;
- the engine cannot do its own part: an input artifact cannot be fetched, the program or container cannot be started
  (or the kubelet would refuse it, e.g. runAsNonRoot with a root user), a declared non-optional output artifact or
  parameter file is missing, an upload fails, or a GPU step has no GPU and no CPU fallback -> **Error**, as Argo
  marks a pod whose init/wait container fails;
- the run was stopped (SIGINT) -> **Failed** with the message "Stopped".
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kai_flows.engine import pod_patch, variables
from kai_flows.engine.artifacts import InputCache
from kai_flows.engine.launch import Launcher, LaunchRequest, Workspace
from kai_flows.engine.load import parse_duration
from kai_flows.engine.model import EngineError, Template
from kai_flows.engine.process import ProcessGroups
from kai_flows.policy import CPU_FALLBACK_ANNOTATION

RESULT_LIMIT = 256 * 1024


@dataclass
class PodResult:
    phase: str
    message: str = ""
    exit_code: int | None = None
    parameters: list[dict[str, str]] = field(default_factory=list)
    result: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


@dataclass
class AttemptSpec:
    """Everything a worker needs; built by the scheduler thread, read-only in the worker."""

    template: Template
    node_name: str
    node_id: str
    pod_name: str
    params: dict[str, str]
    artifacts: dict[str, tuple[str, str | None]]  # input name -> (key, subPath)
    scope: dict[str, str]  # workflow.* and other globals
    retries: int | None
    scratch: Path
    log_path: Path
    wf_name: str
    has_gpu: bool


@dataclass
class PodServices:
    store: Any
    inputs: InputCache
    groups: ProcessGroups
    launcher: Launcher  # how a step starts: host process (cold or warm) or container
    keep_scratch: bool = False


def _trim_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def _read_result(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - RESULT_LIMIT))
        return _trim_newline(f.read().decode(errors="replace"))


def _log(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


def run_attempt(spec: AttemptSpec, svc: PodServices) -> PodResult:
    scratch = spec.scratch
    if scratch.exists():
        shutil.rmtree(scratch)
    ws = svc.launcher.workspace(spec.template, scratch, spec.pod_name)
    try:
        return _run_attempt(spec, svc, ws)
    except EngineError as e:  # the launcher's own refusals (e.g. runAsNonRoot): the pod never ran
        return PodResult("Error", str(e))
    finally:
        ws.close()
        if not svc.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_attempt(spec: AttemptSpec, svc: PodServices, ws: Workspace) -> PodResult:
    tmpl = spec.template
    _log(spec.log_path, f"=== {spec.node_name} pod {spec.pod_name}"
         + (f" attempt {spec.retries}" if spec.retries is not None else "") + " ===")

    # Scope of the container template (Argo's container-only variables included).
    scope = dict(spec.scope)
    scope.update({f"inputs.parameters.{k}": v for k, v in spec.params.items()})
    scope["inputs.parameters"] = json.dumps([{"name": k, "value": v} for k, v in spec.params.items()])
    scope["pod.name"] = spec.pod_name
    scope["node.name"] = spec.node_name
    if spec.retries is not None:
        scope["retries"] = str(spec.retries)
    for decl in tmpl.input_artifacts:
        scope[f"inputs.artifacts.{decl.name}.path"] = ws.step_input(decl)
    for decl in tmpl.output_artifacts:
        scope[f"outputs.artifacts.{decl.name}.path"] = ws.step_output_artifact(decl)
    for op in tmpl.output_params:
        scope[f"outputs.parameters.{op.name}.path"] = ws.step_output_parameter(op)

    if tmpl.deadline_exprs:  # activeDeadlineSeconds/timeout given as parameters: resolved for this pod
        try:
            values = [parse_duration(variables.substitute(e, scope), f"template {tmpl.name!r}")
                      for e in tmpl.deadline_exprs]
        except (variables.UnresolvedVariable, EngineError) as e:
            return PodResult("Error", f"template {tmpl.name!r}: {e}")
        tmpl = dataclasses.replace(tmpl, deadline=min([*values, *([tmpl.deadline] if tmpl.deadline else [])]),
                                   deadline_exprs=())

    if tmpl.resource_patches:  # a podSpecPatch sizing the container from its inputs: resolved for this pod
        try:
            patches = tuple(variables.substitute(p, scope) for p in tmpl.resource_patches)
            main = pod_patch.apply(tmpl.resources, patches, f"template {tmpl.name!r}")
        except (variables.UnresolvedVariable, pod_patch.PodPatchError) as e:
            return PodResult("Error", f"template {tmpl.name!r}: {e}" if isinstance(e, variables.UnresolvedVariable)
                             else str(e))
        memory = main.limit("memory")
        tmpl = dataclasses.replace(tmpl, cpu_limit=main.limit("cpu"), memory_limit=None if memory is None
                                   else int(memory), gpus=main.gpus, resources=main, resource_patches=())

    if tmpl.gpus and not spec.has_gpu and tmpl.annotations.get(CPU_FALLBACK_ANNOTATION) != "true":
        return PodResult("Error", f"template {tmpl.name!r} requests {tmpl.gpus} GPU(s), this machine has none, "
                         f"and its annotation {CPU_FALLBACK_ANNOTATION} is not \"true\"")

    # Inputs first (Argo's init container): a failure here is an Error, never the step's fault.
    for decl in tmpl.input_artifacts:
        source = spec.artifacts.get(decl.name)
        if source is None:
            continue  # optional and not supplied: the path stays absent
        try:
            svc.inputs.materialise(source[0], source[1], ws.host_input(decl))
        except EngineError as e:
            if decl.optional:
                continue
            return PodResult("Error", f"input artifact {decl.name!r}: {e}")
        except Exception as e:  # store errors: one line each
            return PodResult("Error", f"input artifact {decl.name!r}: {type(e).__name__}: {e}")

    try:
        argv = [variables.substitute(a, scope) for a in (*tmpl.command, *tmpl.args)]
        env = {e.name: variables.substitute(e.value, scope) for e in tmpl.pod.env} \
            if svc.launcher.uses_template_env else {}
    except variables.UnresolvedVariable as e:
        return PodResult("Error", f"template {tmpl.name!r}: {e}")
    stdout_path = spec.scratch / "stdout"  # the workspace made the scratch folder
    request = LaunchRequest(template=tmpl, argv=argv, env=env, stdout_path=stdout_path, log_path=spec.log_path,
                            groups=svc.groups, pod_name=spec.pod_name, gpu_hidden=bool(tmpl.gpus and not spec.has_gpu))
    try:
        outcome = svc.launcher.run(ws, request)
    except OSError as e:
        return PodResult("Error", f"cannot start {argv[0]!r}: {e.strerror or e}", argv=argv)
    figures: dict[str, Any] = {"warmStart": outcome.warm_start, "runtime": svc.launcher.name,
                               "wallSeconds": round(outcome.wall_s, 3), "cpuSeconds": round(outcome.cpu_s, 3)}
    if outcome.max_rss_bytes is not None:
        figures["peakMemoryBytes"] = outcome.max_rss_bytes
    if tmpl.memory_limit:
        figures["memoryLimitBytes"] = tmpl.memory_limit
    if tmpl.memory_limit and outcome.max_rss_bytes is not None:
        figures["overMemoryLimit"] = outcome.max_rss_bytes > tmpl.memory_limit
    stdout_text = _read_result(stdout_path) if stdout_path.exists() else ""
    if stdout_text:
        _log(spec.log_path, "--- stdout ---\n" + stdout_text)
    res = PodResult("Succeeded", exit_code=outcome.exit_code, figures=figures, argv=argv)
    if outcome.stopped:
        res.phase, res.message = "Failed", "Stopped"
    elif outcome.timed_out:
        res.phase = "Failed"
        res.message = f"Pod was active on the node longer than the specified deadline ({tmpl.deadline:g}s)"
    elif outcome.oom_killed:
        # Argo's message for a main container the kubelet OOM-killed: "<reason> (exit code <code>)"
        res.phase, res.message = "Failed", "OOMKilled (exit code 137)"
        figures["oomKilled"] = True
    elif outcome.evicted:
        res.phase, res.message = "Failed", outcome.evicted.strip()
    elif outcome.signal is not None:
        res.phase, res.message = "Failed", f"killed by signal {outcome.signal}" + (
            " (over its memory limit?)" if figures.get("overMemoryLimit") else "")
    elif outcome.exit_code != 0:
        last = _last_stderr(spec.log_path)
        res.phase, res.message = "Failed", f"Error (exit code {outcome.exit_code})" + (f": {last}" if last else "")
    if res.phase != "Succeeded":
        return res

    # Outputs (Argo's wait container): parameters, result, artifacts - published only now, on success.
    for op in tmpl.output_params:
        path = ws.host_output(ws.step_output_parameter(op))
        if path is not None and path.is_file():
            res.parameters.append({"name": op.name, "value": _trim_newline(path.read_text(errors="replace"))})
        elif op.default is not None:
            res.parameters.append({"name": op.name, "value": op.default})
        else:
            res.phase, res.message = "Error", (f"output parameter {op.name!r}: the step wrote no file at "
                                               f"{{{{outputs.parameters.{op.name}.path}}}} and it has no default")
            return res
    res.result = stdout_text
    from kai_flows.argo.names import argo_artifact_key

    for decl in tmpl.output_artifacts:
        path = ws.host_output(ws.step_output_artifact(decl))
        if path is None or not path.exists():
            if decl.optional:
                continue
            res.phase, res.message = "Error", (f"output artifact {decl.name!r} was not written (declared, not "
                                               "optional); nothing was published")
            return res
        key = argo_artifact_key(spec.wf_name, spec.pod_name, Path(decl.path).name)
        try:
            svc.store.upload(path, key)
        except Exception as e:
            res.phase, res.message = "Error", f"output artifact {decl.name!r}: upload failed: {e}"
            return res
        res.artifacts.append({"name": decl.name, "path": decl.path, "s3": {"key": key}})
    return res


def _last_stderr(log_path: Path) -> str:
    """The last non-empty line before the `--- stdout ---` block we appended."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    head = text[-65536:].rsplit("\n=== ", 1)[-1].split("\n--- stdout ---", 1)[0]
    lines = [ln for ln in head.splitlines()[1:] if ln.strip()]
    return lines[-1].strip() if lines else ""
