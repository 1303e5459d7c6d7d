"""Argo's `depends`, the one parser the engine, lint and the diagram read a DAG task's dependencies with.

Sources (argoproj/argo-workflows v3.7): workflow/common/ancestry.go (taskNameRegex, GetTaskDependencies,
ValidateTaskResults, getTaskDependsLogic, expandDependency), workflow/controller/dag.go evaluateDependsLogic,
docs/enhanced-depends-logic.md.

Operands are `task.Result` or a bare `task`, combined with `&& || !` and parentheses. The operands are what
Argo's taskNameRegex finds, leftmost first: a result must start with a capital (`a.succeeded` is the two tasks
`a` and `succeeded`), and anything that is no operand (`==`, spaces) is skipped. A bare `task` expands to
`(task.Succeeded || task.Skipped || task.Daemoned)`, plus `|| task.Errored` and `|| task.Failed` when that task has
`continueOn.error` / `continueOn.failed`. `dependencies: [A, B]` is `A && B`. A task runs only once every task the
expression names is fulfilled; until then the answer is "undecided" (`None`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "ITEM_RESULTS",
    "RESULTS",
    "DependsRef",
    "ExpressionError",
    "TaskState",
    "depends_from_dependencies",
    "depends_refs",
    "depends_task_names",
    "depends_tokens",
    "evaluate_depends",
    "expand_depends",
    "task_depends",
]


class ExpressionError(ValueError):
    """A `depends` (or, in the engine, `when`) expression that cannot be parsed or evaluated; the message names it."""


RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
ITEM_RESULTS = ("AnySucceeded", "AllFailed")  # DependencyTypeItems: only on a task with withItems/withParam/...

# Node phases after which a dependency is "fulfilled" (NodePhase.Fulfilled, plus a running daemon).
# Argo's node phase is "Error"; the depends result is "Errored": both spellings are accepted.
_FULFILLED = {"Succeeded", "Failed", "Error", "Errored", "Skipped", "Omitted", "Daemoned"}


@dataclass
class TaskState:
    """What `depends` needs to know about one task: its node phase, and for a fan-out its children's phases."""

    phase: str
    fanout: bool = False
    children_phases: list[str] = field(default_factory=list)
    continue_on_failed: bool = False
    continue_on_error: bool = False


class DependsRef(NamedTuple):
    """One operand: the task, its result (None for a bare task name) and where it stands in the expression."""

    task: str
    result: str | None
    start: int
    end: int


# workflow/common/ancestry.go taskNameRegex, matched leftmost-first like Go's regexp.
_TASK_REF = re.compile(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)|([a-zA-Z0-9][-a-zA-Z0-9]*)")


def depends_refs(expr: str) -> list[DependsRef]:
    """Every operand of `expr`, in order (GetTaskDependencies' matches); results are not checked here."""
    out = []
    for m in _TASK_REF.finditer(expr):
        if m.group(1):
            task, result = m.group(1).split(".", 1)
            out.append(DependsRef(task, result, m.start(), m.end()))
        else:
            out.append(DependsRef(m.group(2), None, m.start(), m.end()))
    return out


def depends_task_names(expr: str) -> set[str]:
    """The task names a `depends` expression refers to (GetTaskDependencies); an unknown `.Result` is an error."""
    names = set()
    for task, result, _, _ in depends_refs(expr):
        if result is not None and result not in RESULTS:
            # workflow/common/ancestry.go ValidateTaskResults
            raise ExpressionError(f"depends {expr!r}: task result {result!r} for task {task!r} is invalid")
        names.add(task)
    return names


def depends_from_dependencies(deps: list[str]) -> str:
    """`dependencies: [A, B]` as the equivalent `depends` (docs/enhanced-depends-logic.md: join with `&&`)."""
    return " && ".join(deps)


def task_depends(task: Mapping[str, Any]) -> str:
    """A raw DAG task's dependency logic before expansion (getTaskDependsLogic): its `depends` when that is a
    non-blank string, else its `dependencies` joined with `&&`. Values of the wrong type count as absent."""
    depends = task.get("depends")
    if isinstance(depends, str) and depends.strip():
        return depends
    deps = task.get("dependencies")
    return depends_from_dependencies([d for d in deps if isinstance(d, str)] if isinstance(deps, list) else [])


def expand_depends(expr: str, tasks: Mapping[str, TaskState]) -> str:
    """Replace each bare task name by its explicit results (ancestry.go expandDependency)."""
    out, pos = [], 0
    for task, result, start, end in depends_refs(expr):
        if result is not None:
            continue
        state = tasks.get(task)
        alts = [f"{task}.Succeeded", f"{task}.Skipped", f"{task}.Daemoned"]
        if state is not None and state.continue_on_error:
            alts.append(f"{task}.Errored")
        if state is not None and state.continue_on_failed:
            alts.append(f"{task}.Failed")
        out += [expr[pos:start], "(" + " || ".join(alts) + ")"]
        pos = end
    out.append(expr[pos:])
    return "".join(out)


_DEP_TOKEN = re.compile(r"\s*(?:(&&|\|\||==|!=|!|\(|\))|([a-zA-Z0-9][-a-zA-Z0-9]*\.[A-Za-z]+))")


def depends_tokens(logic: str, expr: str) -> list[str]:
    """The tokens of an expanded expression (`logic`): operators, parentheses and `task.Result` operands.
    `expr` is the expression as written, for the error message."""
    tokens, pos = [], 0
    while pos < len(logic):
        if logic[pos:].strip() == "":
            break
        m = _DEP_TOKEN.match(logic, pos)
        if not m:
            raise ExpressionError(f"depends {expr!r}: unexpected {logic[pos:].strip()[:20]!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


def _eval_depends(tokens: list[str], values: Mapping[str, bool], expr: str) -> bool:
    """Boolean grammar of expr-lang restricted to what depends can hold: || < && < == != < ! < operand."""
    i = 0

    def fail(msg: str) -> ExpressionError:
        return ExpressionError(f"depends {expr!r}: {msg}")

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise fail("unexpected end of expression")
        i += 1
        return tokens[i - 1]

    def unary() -> bool:
        tok = take()
        if tok == "!":
            return not unary()
        if tok == "(":
            v = disj()
            if take() != ")":
                raise fail("missing ')'")
            return v
        if tok not in values:
            raise fail(f"unexpected {tok!r}")
        return values[tok]

    def cmp() -> bool:
        v = unary()
        while peek() in ("==", "!="):
            op = take()
            r = unary()
            v = (v == r) if op == "==" else (v != r)
        return v

    def conj() -> bool:
        v = cmp()
        while peek() == "&&":
            take()
            r = cmp()
            v = v and r
        return v

    def disj() -> bool:
        v = conj()
        while peek() == "||":
            take()
            r = conj()
            v = v or r
        return v

    if not tokens:
        raise fail("empty expression")
    result = disj()
    if i != len(tokens):
        raise fail(f"unexpected {tokens[i]!r}")
    return result


def evaluate_depends(expr: str, tasks: Mapping[str, TaskState]) -> bool | None:
    """Whether a task with this `depends` runs (True), is Omitted (False), or must wait (None).

    `tasks` maps task names to their state; a name missing from it, or a phase that is not fulfilled yet
    (Pending, Running), makes the answer None, as in dag.go evaluateDependsLogic ("proceed" false).
    `.AnySucceeded`/`.AllFailed` on a task without withItems/withParam/withSequence is an error, as argo lint
    reports it (workflow/validate/validate.go: "uses an items-based condition ... but does not contain any items").
    """
    if not expr.strip():
        return True
    names = depends_task_names(expr)
    for task, result, _, _ in depends_refs(expr):
        state = tasks.get(task)
        if result in ITEM_RESULTS and state is not None and not state.fanout:
            raise ExpressionError(
                f"depends {expr!r}: dependency {task!r} uses an items-based condition such as .AnySucceeded or "
                ".AllFailed but does not contain any items")
    for name in names:
        state = tasks.get(name)
        if state is None or state.phase not in _FULFILLED:
            return None
    values: dict[str, bool] = {}
    for name in names:
        s = tasks[name]
        phases = s.children_phases if s.fanout else []
        # dag.go: AnySucceeded/AllFailed are computed over a TaskGroup's children only.
        flags = {
            "Succeeded": s.phase == "Succeeded",
            "Failed": s.phase == "Failed",
            "Errored": s.phase in ("Error", "Errored"),
            "Skipped": s.phase == "Skipped",
            "Omitted": s.phase == "Omitted",
            "Daemoned": s.phase == "Daemoned",
            "AnySucceeded": any(p == "Succeeded" for p in phases),
            "AllFailed": bool(phases) and all(p == "Failed" for p in phases),
        }
        for result, v in flags.items():
            values[f"{name}.{result}"] = v
    return _eval_depends(depends_tokens(expand_depends(expr, tasks), expr), values, expr)
