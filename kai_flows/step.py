"""The step API: a step is a plain typed function plus a declaration beside it.

A step function takes
- parameters: plain typed arguments (str, int, float, bool, Literal, list/dict of those, pydantic models),
  validated by pydantic when the entry point calls it;
- input artifacts: ``In[Path]`` arguments, a file or a directory the step only reads;
- output artifacts: ``Out[Path]`` arguments, a path that does not exist yet; the step creates it (a file or a
  directory) and the runner publishes it only if the step succeeds;
and returns ``None`` or a pydantic model whose fields become the step's output parameters.

``@step(...)`` records the declaration (image, resources, pool, retries, timeout) on the function and returns
the function itself, so calling it in a test is calling the plain function. Nothing here imports the engine,
the compiler or the submit code (design contract 1).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, get_origin, get_type_hints

from pydantic import BaseModel, TypeAdapter

F = TypeVar("F", bound=Callable[..., Any])
# Keyword options of `Pipeline.task()`; a step parameter of the same name could not be passed.
RESERVED_NAMES = frozenset({"name", "when", "after", "depends"})
# What every compiled container runs, then `<module:function>` and the step's arguments (kai_flows/entrypoint.py).
ENTRYPOINT_COMMAND = ("python", "-m", "kai_flows.entrypoint")


def serialise_output(value: Any) -> str:
    """A parameter value as Argo carries it (an output parameter's file, a compiled default): strings as they are,
    everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(TypeAdapter(Any).dump_python(value, mode="json"), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class _ArtifactMarker:
    direction: Literal["in", "out"]
    optional: bool = False


class In:
    """``In[Path]``: an input artifact (file or directory), read-only for the step."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, _ArtifactMarker("in")]


class Out:
    """``Out[Path]``: an output artifact the step creates at the given path."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, _ArtifactMarker("out")]


class OptionalIn:
    """``OptionalIn[Path]``: an input artifact that may be absent (Argo ``optional: true``)."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, _ArtifactMarker("in", optional=True)]


class OptionalOut:
    """``OptionalOut[Path]``: an output artifact the step may not produce (Argo ``optional: true``)."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, _ArtifactMarker("out", optional=True)]


@dataclass(frozen=True)
class StepSpec:
    """Where and how a step runs in a cluster. Values use Kubernetes quantity syntax."""

    image: str
    cpu: str = "1"
    memory: str = "1Gi"
    gpu: int = 0
    pool: str = "cpu-optimized"
    retries: int = 2
    timeout: str = "30m"
    # A GPU step may still run on a CPU (slower) when the local engine has no GPU.
    cpu_fallback: bool = True
    # Limits are requests times this factor for cpu; memory limit equals the request unless set.
    cpu_limit: str | None = None
    memory_limit: str | None = None
    description: str = ""
    # A step whose memory follows the job (issue: a 300-photo job must not be OOM-killed, a 10-photo job must not
    # reserve the 300-photo figure): its template takes MEMORY_PARAM (default `memory`), which sets the main
    # container's memory request and limit through podSpecPatch; a task passes the planned figure, at most this.
    memory_max: str | None = None

    @property
    def sized(self) -> bool:
        return self.memory_max is not None


MEMORY_PARAM = "kai-memory"  # the sized steps' input parameter (a name no Python parameter can take)


@dataclass(frozen=True)
class ParamInfo:
    name: str
    annotation: Any
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    direction: Literal["in", "out"]
    optional: bool = False


@dataclass(frozen=True)
class StepInfo:
    """Everything the compiler and the entry point need to know about a step, read from its signature."""

    func: Callable[..., Any]
    spec: StepSpec
    params: tuple[ParamInfo, ...]
    inputs: tuple[ArtifactInfo, ...]
    outputs: tuple[ArtifactInfo, ...]
    returns: type[BaseModel] | None
    output_params: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The Argo template name: the function name with dashes."""
        return self.func.__name__.replace("_", "-")

    @property
    def ref(self) -> str:
        """``module:function``, what the entry point imports."""
        return f"{self.func.__module__}:{self.func.__qualname__}"


def _artifact_marker(annotation: Any) -> _ArtifactMarker | None:
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, _ArtifactMarker):
                return meta
    return None


def inspect_step(func: Callable[..., Any], spec: StepSpec) -> StepInfo:
    hints = get_type_hints(func, include_extras=True)
    params: list[ParamInfo] = []
    inputs: list[ArtifactInfo] = []
    outputs: list[ArtifactInfo] = []
    for name, p in inspect.signature(func).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"step {func.__name__}: *args/**kwargs are not allowed ({name})")
        if name in RESERVED_NAMES:
            raise TypeError(f"step {func.__name__}: parameter name {name!r} is reserved by Pipeline.task(); rename it")
        if name not in hints:
            raise TypeError(f"step {func.__name__}: parameter {name!r} has no type annotation")
        marker = _artifact_marker(hints[name])
        if marker is None:
            params.append(ParamInfo(name, hints[name], p.default))
        elif marker.direction == "in":
            inputs.append(ArtifactInfo(name, "in", marker.optional))
        else:
            outputs.append(ArtifactInfo(name, "out", marker.optional))
    ret = hints.get("return", type(None))
    if ret is type(None) or ret is None:
        returns, out_params = None, ()
    elif isinstance(ret, type) and issubclass(ret, BaseModel):
        returns, out_params = ret, tuple(ret.model_fields)
    else:
        raise TypeError(f"step {func.__name__}: return type must be None or a pydantic model, not {ret!r}")
    clash = {a.name for a in inputs + outputs} & set(out_params)
    if clash:
        raise TypeError(f"step {func.__name__}: names used both as artifact and output parameter: {sorted(clash)}")
    return StepInfo(func, spec, tuple(params), tuple(inputs), tuple(outputs), returns, out_params)


def step(
    *,
    image: str,
    cpu: str = "1",
    memory: str = "1Gi",
    gpu: int = 0,
    pool: str = "cpu-optimized",
    retries: int = 2,
    timeout: str = "30m",
    cpu_fallback: bool = True,
    cpu_limit: str | None = None,
    memory_limit: str | None = None,
    memory_max: str | None = None,
) -> Callable[[F], F]:
    """Declare a function as a step. The function is returned unchanged (callable as before).

    ``memory_max``: the step is sized per job (see ``StepSpec.memory_max``): tasks may pass ``memory=`` up to it."""
    if memory_max is not None and memory_limit is not None:
        raise TypeError("a sized step (memory_max) has one memory figure per job, request and limit alike: "
                        "drop memory_limit")
    spec = StepSpec(
        image=image, cpu=cpu, memory=memory, gpu=gpu, pool=pool, retries=retries, timeout=timeout,
        cpu_fallback=cpu_fallback, cpu_limit=cpu_limit, memory_limit=memory_limit, memory_max=memory_max,
    )

    def decorate(func: F) -> F:
        func.__kai_step__ = inspect_step(func, spec)  # type: ignore[attr-defined]
        return func

    return decorate


def step_info(func: Callable[..., Any]) -> StepInfo:
    info = getattr(func, "__kai_step__", None)
    if info is None:
        raise TypeError(f"{getattr(func, '__qualname__', func)!r} is not a step: decorate it with @step(...)")
    return info


__all__ = ["In", "OptionalIn", "OptionalOut", "Out", "StepInfo", "StepSpec", "inspect_step", "step", "step_info"]
