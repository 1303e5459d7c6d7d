"""Find the YAML files to lint and load every document in them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kai_flows.lint.problem import LintError, Problem


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # libyaml: 5x the parse speed
    """SafeLoader that keeps a lone `=` scalar a string (pyyaml issue 89) without patching SafeLoader globally."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: str(node.value))
# Kubernetes' YAML-to-JSON turns an unquoted date into a string; so does lint (a date field is a string field).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class Document:
    file: str
    index: int  # position in a multi-document file
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        if isinstance(meta, dict):
            return str(meta.get("name") or meta.get("generateName") or "?")
        return "?"

    @property
    def label(self) -> str:
        return f"{self.kind or '?'}/{self.name}"


def collect_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise LintError(f"{p}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        if (r := f.resolve()) not in seen:
            seen.add(r)
            unique.append(f)
    return unique


def load_documents(file: Path) -> tuple[list[Document], list[Problem]]:
    name = str(file)
    try:
        raw = list(yaml.load_all(file.read_text(), Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        return [], [Problem(name, "", None, "", f"not valid YAML: {where}{reason}")]
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(name, "", None, "", f"cannot read: {e}")]
    docs, problems = [], []
    for i, obj in enumerate(raw):
        if obj is None:
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(name, f"document {i + 1}", None, "", "not a mapping (expected an object)"))
            continue
        missing = [k for k in ("apiVersion", "kind") if not isinstance(obj.get(k), str) or not obj.get(k)]
        if missing:
            problems.append(Problem(name, f"document {i + 1}", None, missing[0], "required field missing"))
            continue
        docs.append(Document(name, i, obj))
    return docs, problems
