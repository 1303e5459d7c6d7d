"""The pipeline API: a typed DAG of tasks built from steps, checked as it is built.

    p = Pipeline("image-quality", queue="batch")
    images = p.input_artifact("images", "folder of photos")
    max_blur = p.param("min_sharpness", float, default=60.0)
    listed = p.task(list_images, images=images)
    item = p.each(listed["names"])                   # fan-out over a list output (withParam)
    scored = p.task(assess_image, name=item, image=images.sub(item), min_sharpness=max_blur)
    report = p.task(aggregate_quality, scores=scored.result)   # aggregated: list of each child's result
    p.output("report", report["report"])
    p.on_exit(finalize, workflow_status=WORKFLOW_STATUS)

Every edge is checked when the task is added: artifacts only feed artifacts, parameters only parameters of a
compatible type, a wrong edge is a `PipelineError` naming both ends. `kai_flows.compile` turns the result into an
Argo WorkflowTemplate.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from kai_flows.argo.units import parse_quantity
from kai_flows.step import MEMORY_PARAM, StepInfo, step_info

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class PipelineError(ValueError):
    """The pipeline is wired wrongly; the message names the task and argument at fault."""


# ---------------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ParamRef:
    """A parameter value known at run time: a pipeline parameter, a task output, a loop item or a global."""

    expr: str  # the Argo variable, without braces
    type: Any
    label: str  # how errors name it
    source_task: str | None = None
    loop_source: ParamRef | None = None  # set on loop items

    @property
    def argo(self) -> str:
        return "{{" + self.expr + "}}"

    @property
    def sources(self) -> frozenset[str]:
        """The tasks this value comes from."""
        return frozenset({self.source_task} if self.source_task else ())

    def __eq__(self, other: object) -> Condition:  # type: ignore[override]
        return Condition._compare(self, "==", other)

    def __ne__(self, other: object) -> Condition:  # type: ignore[override]
        return Condition._compare(self, "!=", other)

    def __hash__(self) -> int:
        return hash(self.expr)

    def is_in(self, *values: str) -> Condition:
        return Condition._compare(self, "in", values)


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact: a pipeline input (an S3 key held by a workflow parameter) or a task's output artifact."""

    label: str
    source_task: str | None
    artifact: str | None = None  # task output artifact name
    key_param: str | None = None  # pipeline input: the workflow parameter that holds the S3 key
    sub_path: ParamRef | str | None = None
    optional: bool = False

    def sub(self, path: ParamRef | str) -> ArtifactRef:
        """The part of a directory artifact at `path` (Argo `subPath`), e.g. one image of a folder."""
        return ArtifactRef(self.label, self.source_task, self.artifact, self.key_param, path, self.optional)


@dataclass(frozen=True)
class Condition:
    """A `when` expression in govaluate syntax; values are single-quoted so slashes, dashes and spaces are safe."""

    expr: str
    tasks: frozenset[str] = frozenset()
    loop: ParamRef | None = None

    @staticmethod
    def _compare(ref: ParamRef, op: str, other: object) -> Condition:
        tasks = frozenset({ref.source_task} if ref.source_task else ())
        if op == "in":
            values = ", ".join(_quote(v) for v in other)  # type: ignore[union-attr]
            return Condition(f"{_quote(ref.argo)} in ({values})", tasks)
        if isinstance(other, ParamRef):
            if other.source_task:
                tasks |= {other.source_task}
            return Condition(f"{_quote(ref.argo)} {op} {_quote(other.argo)}", tasks)
        if isinstance(other, bool):
            return Condition(f"{ref.argo} {op} {str(other).lower()}", tasks)
        if isinstance(other, (int, float)):
            return Condition(f"{ref.argo} {op} {other}", tasks)
        return Condition(f"{_quote(ref.argo)} {op} {_quote(str(other))}", tasks)

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.expr}) && ({other.expr})", self.tasks | other.tasks)

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.expr}) || ({other.expr})", self.tasks | other.tasks)

    def __invert__(self) -> Condition:
        return Condition(f"!({self.expr})", self.tasks)


def _expr(ref: ParamRef | None) -> str | None:
    """Compare references by their Argo expression (`==` on a ParamRef builds a Condition)."""
    return ref.expr if ref is not None else None


def _quote(value: str) -> str:
    if "'" in value:
        raise PipelineError(f"cannot quote {value!r} for a when expression: it contains a single quote")
    return f"'{value}'"


WORKFLOW_STATUS = ParamRef("workflow.status", str, "workflow.status")
WORKFLOW_FAILURES = ParamRef("workflow.failures", str, "workflow.failures")
WORKFLOW_NAME = ParamRef("workflow.name", str, "workflow.name")
_EXIT_ONLY = {WORKFLOW_STATUS.expr, WORKFLOW_FAILURES.expr}

# ---------------------------------------------------------------------------------------------- type checks


def _is_list(tp: Any) -> bool:
    return get_origin(tp) in (list, typing.List)  # noqa: UP006


def _element(tp: Any) -> Any:
    args = get_args(tp)
    return args[0] if args else Any


def compatible(source: Any, target: Any) -> bool:
    """May a value of type `source` be passed where `target` is expected?

    A `str` parameter takes any value: Argo passes every parameter as text, so it receives the value's JSON.
    """
    if target is Any or target is str or source is Any or source == target:
        return True
    t_origin, s_origin = get_origin(target), get_origin(source)
    if t_origin in (Union, types.UnionType):
        return any(compatible(source, t) for t in get_args(target))
    if s_origin in (Union, types.UnionType):
        return all(compatible(s, target) for s in get_args(source))
    if s_origin is Literal:
        return all(_value_fits(v, target) for v in get_args(source))
    if t_origin is Literal:
        return False  # a free value cannot be proven to be one of the allowed ones
    if target is float and source is int:
        return True
    if _is_list(target) and _is_list(source):
        return compatible(_element(source), _element(target))
    if t_origin is dict and (source is dict or s_origin is dict):
        return True
    if isinstance(source, type) and isinstance(target, type):
        if issubclass(source, BaseModel) and target is dict:
            return True
        return issubclass(source, target)
    return False


def _value_fits(value: Any, target: Any) -> bool:
    try:
        TypeAdapter(target).validate_python(value, strict=not isinstance(value, int) or target is not float)
        return True
    except ValidationError:
        return False


def _type_name(tp: Any) -> str:
    """`list[Counted]`, `Literal['a', 'b']`, `int`: short names for error messages."""
    args = get_args(tp)
    if get_origin(tp) is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if args:
        origin = get_origin(tp)
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class TaskArgs:
    params: dict[str, ParamRef | Any] = field(default_factory=dict)  # Any = a constant
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)


@dataclass
class Task:
    name: str
    step: StepInfo
    args: TaskArgs
    depends: set[str]
    when: Condition | None = None
    loop: ParamRef | None = None
    loop_items: list[Any] | None = None
    depends_expr: str | None = None
    exit_handler: bool = False
    _pipeline: Pipeline | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> ParamRef | ArtifactRef:
        """An output of this task: an output parameter or an output artifact, by name."""
        for a in self.step.outputs:
            if a.name == name:
                if self.fanout:
                    raise PipelineError(
                        f"task {self.name!r} fans out: its artifact {name!r} is not aggregated (Argo aggregates "
                        "parameters and results only)"
                    )
                # Argo names the exit handler's nodes <workflow>.onExit.<task>.
                source = f"onExit.{self.name}" if self.exit_handler else self.name
                return ArtifactRef(f"{source}.{name}", source, artifact=name, optional=a.optional)
        if name in self.step.output_params:
            assert self.step.returns is not None
            tp = self.step.returns.model_fields[name].annotation
            expr = f"tasks.{self.name}.outputs.parameters.{name}"
            if self.fanout:
                if tp is not str:
                    raise PipelineError(
                        f"task {self.name!r} fans out: Argo aggregates output parameter {name!r} as a list of strings; "
                        f"use {self.name}.result for the list of typed results"
                    )
                return ParamRef(expr, list[str], f"{self.name}.{name}", self.name)
            return ParamRef(expr, tp, f"{self.name}.{name}", self.name)
        known = [a.name for a in self.step.outputs] + list(self.step.output_params)
        raise PipelineError(f"task {self.name!r} has no output {name!r}; it has {known}")

    @property
    def fanout(self) -> bool:
        return self.loop is not None or self.loop_items is not None

    @property
    def result(self) -> ParamRef:
        """The step's returned model (Argo `outputs.result`); a list of them when the task fans out."""
        if self.step.returns is None:
            raise PipelineError(f"task {self.name!r}: step {self.step.name} returns nothing")
        tp = list[self.step.returns] if self.fanout else self.step.returns  # type: ignore[name-defined]
        return ParamRef(f"tasks.{self.name}.outputs.result", tp, f"{self.name}.result", self.name)


@dataclass
class PipelineParam:
    name: str
    type: Any
    default: Any
    enum: list[str] | None
    description: str


@dataclass
class PipelineInput:
    name: str
    description: str


class Pipeline:
    """A DAG of steps with typed parameters, input artifacts, outputs and an optional exit handler."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        queue: str = "batch",
        priority_class: str | None = None,
        parallelism: int | None = None,
        active_deadline_seconds: int = 6 * 3600,
    ) -> None:
        if not _NAME.match(name) or len(name) > 52:
            raise PipelineError(f"pipeline name {name!r} must be lower-case letters, digits and dashes, <= 52 chars")
        self.name = name
        self.description = description
        self.queue = queue
        self.priority_class = priority_class
        self.parallelism = parallelism
        self.active_deadline_seconds = active_deadline_seconds
        self.params: dict[str, PipelineParam] = {}
        self.inputs: dict[str, PipelineInput] = {}
        self.tasks: dict[str, Task] = {}
        self.outputs: dict[str, ArtifactRef] = {}
        self.exit_task: Task | None = None

    # -- declarations

    def param(
        self, name: str, type_: Any, *, default: Any = None, description: str = "", required: bool = False
    ) -> ParamRef:
        """A typed pipeline parameter; a `Literal[...]` type becomes the WorkflowTemplate parameter's enum."""
        self._check_new_name(name)
        enum = [str(v) for v in get_args(type_)] if get_origin(type_) is Literal else None
        if default is not None:
            try:
                TypeAdapter(type_).validate_python(default)
            except ValidationError as e:
                raise PipelineError(f"parameter {name!r}: default {default!r} is not a {_type_name(type_)}: "
                                    f"{e.errors()[0]['msg']}") from None
        elif not required:
            raise PipelineError(f"parameter {name!r}: give a default or mark it required=True")
        self.params[name] = PipelineParam(name, type_, default, enum, description)
        return ParamRef(f"workflow.parameters.{name}", type_, f"parameter {name!r}")

    def input_artifact(self, name: str, description: str = "") -> ArtifactRef:
        """An input folder or file; at submit time a workflow parameter of the same name holds its S3 key."""
        self._check_new_name(name)
        self.inputs[name] = PipelineInput(name, description)
        return ArtifactRef(f"input {name!r}", None, key_param=name)

    def _check_new_name(self, name: str) -> None:
        if not re.match(r"^[a-zA-Z0-9_][-a-zA-Z0-9_]*$", name):
            raise PipelineError(f"name {name!r} may hold only letters, digits, '-' and '_'")
        if name in self.params or name in self.inputs:
            raise PipelineError(f"pipeline {self.name!r} already has a parameter or input named {name!r}")

    def each(self, source: ParamRef | list[Any]) -> ParamRef:
        """The item of a fan-out: over a list-typed output (withParam) or a constant list (withItems)."""
        if isinstance(source, list):
            if not source:
                raise PipelineError("each(): a constant list to fan out over must not be empty")
            return _item_of_list(source)
        if not _is_list(source.type) and source.type is not Any:
            raise PipelineError(f"each(): {source.label} is a {_type_name(source.type)}, not a list")
        return ParamRef("item", _element(source.type), f"item of {source.label}", loop_source=source)

    def task(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        when: Condition | None = None,
        after: list[Task] | None = None,
        depends: str | None = None,
        memory: ParamRef | str | None = None,
        **kwargs: Any,
    ) -> Task:
        """Add a task running `func` (a step); keyword arguments feed its parameters and input artifacts.

        `memory`: this job's memory for a sized step (`@step(memory_max=...)`), a quantity or a planner's output."""
        info = step_info(func)
        task_name = name or info.name
        if task_name in self.tasks:
            raise PipelineError(f"pipeline {self.name!r} already has a task {task_name!r}; pass name=...")
        if not _NAME.match(task_name):
            raise PipelineError(f"task name {task_name!r} must be lower-case letters, digits and dashes")
        task = self._build_task(task_name, info, kwargs, exit_handler=False)
        if memory is not None:
            self._size(task, memory)
        for t in after or []:
            task.depends.add(t.name)
        if when is not None:
            task.when = when
            task.depends |= set(when.tasks)
        if depends is not None:
            task.depends_expr = depends
        for dep in task.depends:
            if dep not in self.tasks:
                raise PipelineError(f"task {task_name!r} depends on {dep!r}, which is not a task of {self.name!r}")
        task._pipeline = self
        self.tasks[task_name] = task
        return task

    def output(self, name: str, artifact: ArtifactRef) -> None:
        if not isinstance(artifact, ArtifactRef) or artifact.source_task is None:
            raise PipelineError(f"output {name!r} must be a task's output artifact")
        self.outputs[name] = artifact

    def on_exit(self, func: Callable[..., Any], *, when: Condition | None = None, **kwargs: Any) -> Task:
        """The exit handler: runs after the DAG whatever its outcome; may read WORKFLOW_STATUS/FAILURES."""
        info = step_info(func)
        task = self._build_task(info.name, info, kwargs, exit_handler=True)
        task.when = when
        task.exit_handler = True
        self.exit_task = task
        return task

    # -- wiring checks

    def _build_task(self, task_name: str, info: StepInfo, kwargs: dict[str, Any], *, exit_handler: bool) -> Task:
        params = {p.name: p for p in info.params}
        inputs = {a.name: a for a in info.inputs}
        outputs = {a.name for a in info.outputs}
        args = TaskArgs()
        depends: set[str] = set()
        loop: ParamRef | None = None
        loop_items: list[Any] | None = None

        def note_loop(ref: ParamRef) -> None:
            nonlocal loop, loop_items
            if isinstance(ref, _ItemRef):
                if loop_items is not None and loop_items != ref.items:
                    raise PipelineError(f"task {task_name!r}: items of two different lists")
                loop_items = ref.items
                return
            if loop is not None and _expr(loop.loop_source) != _expr(ref.loop_source):
                raise PipelineError(f"task {task_name!r}: items of two different lists (one loop per task)")
            loop = ref

        for arg, value in kwargs.items():
            end = f"task {task_name!r} argument {arg!r}"
            if arg in outputs:
                raise PipelineError(f"{end} is an output artifact of {info.name}: it is not given, it is produced")
            if arg in inputs:
                if not isinstance(value, ArtifactRef):
                    what = value.label if isinstance(value, ParamRef) else repr(value)
                    raise PipelineError(f"{end} is an artifact; it cannot take {what} (not an artifact)")
                if value.source_task:
                    depends.add(value.source_task)
                if isinstance(value.sub_path, ParamRef):
                    self._check_ref(value.sub_path, end, exit_handler)
                    if value.sub_path.loop_source is not None or isinstance(value.sub_path, _ItemRef):
                        note_loop(value.sub_path)
                args.artifacts[arg] = value
            elif arg in params:
                target = params[arg].annotation
                if isinstance(value, ArtifactRef):
                    raise PipelineError(f"{end} is a {_type_name(target)} parameter; it cannot take artifact "
                                        f"{value.label}")
                if isinstance(value, ParamRef):
                    self._check_ref(value, end, exit_handler)
                    if not compatible(value.type, target):
                        raise PipelineError(f"{end} expects {_type_name(target)}, but {value.label} is "
                                            f"{_type_name(value.type)}")
                    depends |= value.sources
                    if value.loop_source is not None or isinstance(value, _ItemRef):
                        note_loop(value)
                else:
                    try:
                        TypeAdapter(target).validate_python(value)
                    except ValidationError as e:
                        raise PipelineError(f"{end}: {value!r} is not a {_type_name(target)}: "
                                            f"{e.errors()[0]['msg']}") from None
                args.params[arg] = value
            else:
                raise PipelineError(f"{end}: step {info.name} has no parameter or input artifact {arg!r}; "
                                    f"it takes {sorted(list(params) + list(inputs))}")
        for p in info.params:
            if p.required and p.name not in args.params:
                raise PipelineError(f"task {task_name!r}: required parameter {p.name!r} of {info.name} is not given")
        for a in info.inputs:
            if not a.optional and a.name not in args.artifacts:
                raise PipelineError(f"task {task_name!r}: input artifact {a.name!r} of {info.name} is not given")
        if loop is not None and loop.loop_source is not None and loop.loop_source.source_task:
            depends.add(loop.loop_source.source_task)
        if exit_handler and depends:
            raise PipelineError(f"exit handler {task_name!r} cannot read task outputs ({sorted(depends)}): Argo runs "
                                "it outside the DAG; pass pipeline parameters or workflow.status/failures")
        return Task(task_name, info, args, depends, loop=loop, loop_items=loop_items)

    def _size(self, task: Task, memory: ParamRef | str) -> None:
        spec = task.step.spec
        end = f"task {task.name!r} argument 'memory'"
        if not spec.sized:
            raise PipelineError(f"{end}: step {task.step.name} has a fixed memory ({spec.memory}); declare "
                                "@step(memory_max=...) to size it per job")
        if isinstance(memory, ParamRef):
            self._check_ref(memory, end, False)
            if not compatible(memory.type, str):
                raise PipelineError(f"{end} expects a quantity (str), but {memory.label} is {_type_name(memory.type)}")
            task.depends |= memory.sources
        else:
            try:
                amount = parse_quantity(memory)
            except ValueError:
                raise PipelineError(f"{end}: {memory!r} is not a Kubernetes quantity") from None
            if not 0 < amount <= parse_quantity(spec.memory_max):
                raise PipelineError(f"{end}: {memory} is not above 0 and at most {spec.memory_max}, the step's "
                                    "memory_max")
        task.args.params[MEMORY_PARAM] = memory

    def _check_ref(self, ref: ParamRef, end: str, exit_handler: bool) -> None:
        if ref.expr in _EXIT_ONLY and not exit_handler:
            raise PipelineError(f"{end}: {ref.expr} exists only in the exit handler")
        for source in sorted(ref.sources):
            if source not in self.tasks:
                raise PipelineError(f"{end}: {ref.label} comes from task {source!r}, which is not in "
                                    f"pipeline {self.name!r} (add it first)")


@dataclass(frozen=True, eq=False)
class _ItemRef(ParamRef):
    items: list[Any] = field(default_factory=list)


def _item_of_list(items: list[Any]) -> ParamRef:
    tp = type(items[0])
    if any(type(v) is not tp for v in items):
        raise PipelineError(f"each(): mixed item types in {items!r}")
    return _ItemRef("item", tp, "item", items=list(items))


@dataclass(frozen=True, eq=False)
class _JsonObjectRef(ParamRef):
    parts: tuple[tuple[str, ParamRef], ...] = ()

    @property
    def argo(self) -> str:
        return "{" + ", ".join(f"{json.dumps(k)}: {ref.argo}" for k, ref in self.parts) + "}"

    @property
    def sources(self) -> frozenset[str]:
        return frozenset().union(*(ref.sources for _, ref in self.parts))


def json_object(**values: ParamRef) -> ParamRef:
    """One JSON object built at run time from several JSON values, e.g. the results of several tasks.

    Argo substitutes text, so only values that are JSON themselves may go in: results, numbers, booleans,
    lists and models; a plain string output would come out unquoted.
    """
    for key, ref in values.items():
        if not isinstance(ref, ParamRef) or ref.type is str or (get_origin(ref.type) is Literal):
            raise PipelineError(f"json_object(): {key!r} must be a JSON-valued reference (a result, number, list or "
                                f"model), not {getattr(ref, 'label', repr(ref))}")
    return _JsonObjectRef("", dict, f"json_object({', '.join(values)})", parts=tuple(values.items()))


@dataclass(frozen=True, eq=False)
class _TaskTimesRef(ParamRef):
    names: tuple[str, ...] = ()

    @property
    def argo(self) -> str:
        return "{" + ", ".join(f'"{n}": ["{{{{tasks.{n}.startedAt}}}}", "{{{{tasks.{n}.finishedAt}}}}"]'
                               for n in self.names) + "}"

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(self.names)


def task_times(*tasks: Task) -> ParamRef:
    """``{"task": ["<startedAt>", "<finishedAt>"], ...}`` at run time: when each task started and finished, as Argo
    itself records them (``tasks.<name>.startedAt`` / ``.finishedAt``, RFC 3339 to the second), for the finalizer's
    step times. The receiving task depends on each of them (Argo puts only its ancestors' times in scope). Neither a
    fan-out (Argo gives its task group no times) nor an exit handler has them."""
    for t in tasks:
        if t.fanout or t.exit_handler:
            raise PipelineError(f"task_times(): task {t.name!r} is a {'fan-out' if t.fanout else 'exit handler'}; "
                                "Argo records no start and finish times for it in a DAG's scope")
    return _TaskTimesRef("", dict, f"task_times({', '.join(t.name for t in tasks)})",
                         names=tuple(t.name for t in tasks))
