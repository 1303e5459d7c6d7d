"""What lint reports: one Problem per finding, each naming file, object, template and field."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Path_ = tuple[str | int, ...]


class LintError(Exception):
    """Lint could not run at all (e.g. a path that does not exist); the message names the cause."""


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    object: str  # "Kind/name"; "" for a file that could not be read
    template: str | None
    field: str  # JSON path such as spec.templates[1].container.image
    message: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.object:
            parts.append(self.object)
        if self.template:
            parts.append(f"template '{self.template}'")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def template_of(obj: Any, path: Sequence[str | int]) -> str | None:
    """The name of the innermost `templates[i]` (or DAG `inline`) the path runs through, if any."""
    name = None
    node = obj
    prev: str | int | None = None
    for p in path:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            break
        if prev == "templates" and isinstance(p, int) and isinstance(node, dict):
            name = node.get("name") if isinstance(node.get("name"), str) else f"#{p}"
        prev = p
    return name


class Reporter:
    """Collects problems for one object, deriving the template name from each path."""

    def __init__(self, file: str, obj: Any, label: str) -> None:
        self.file = file
        self.obj = obj
        self.label = label
        self.problems: list[Problem] = []

    def __call__(self, path: Iterable[str | int], message: str, template: str | None = None) -> None:
        path = tuple(path)
        tmpl = template if template is not None else template_of(self.obj, path)
        self.problems.append(Problem(self.file, self.label, tmpl, format_path(path), message))
