"""Values as HTML a person reads: tables for mappings, lists as lists, numbers rounded; never a JSON dump.

The finalizer's metrics are the steps' summaries, ``{"step": {"name": value}}``, values nested to any depth: a
mapping becomes a two-column table (nested in its cell when it is a value), a list of scalars a comma-separated line
(long ones cut, saying how many more), a list of mappings a table with a column per key, a list of lists one
line per inner list.
"""

from __future__ import annotations

import html
from typing import Any

MAX_ITEMS = 40  # a list longer than this shows its first items and the count of the rest
MAX_ROWS = 60


def scalar(v: Any) -> str:
    """A number or text as escaped HTML: floats to 6 significant digits, large integers in groups of three, None
    as a dash, booleans as yes/no."""
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int) and abs(v) >= 10_000:  # sizes in bytes, counts of points: 1,522,224
        return f"{v:,}"
    return html.escape(str(v))


def _is_scalar(v: Any) -> bool:
    return not isinstance(v, (dict, list, tuple))


def _more(shown: int, total: int) -> str:
    return f" <span class='hint'>(and {total - shown} more)</span>" if total > shown else ""


def value(v: Any) -> str:
    """Any JSON value as HTML."""
    if isinstance(v, dict):
        return table(v) if v else "<span class='hint'>none</span>"
    if isinstance(v, (list, tuple)):
        if not v:
            return "<span class='hint'>none</span>"
        if all(_is_scalar(x) for x in v):
            return ", ".join(scalar(x) for x in v[:MAX_ITEMS]) + _more(min(len(v), MAX_ITEMS), len(v))
        if all(isinstance(x, dict) for x in v):
            return records(v)
        if all(isinstance(x, (list, tuple)) and all(_is_scalar(y) for y in x) for x in v):
            lines = ["(" + ", ".join(scalar(y) for y in x) + ")" for x in v[:MAX_ITEMS]]
            return "<br>".join(lines) + _more(len(lines), len(v))
        items = "".join(f"<li>{value(x)}</li>" for x in v[:MAX_ITEMS])
        return f"<ul>{items}</ul>{_more(min(len(v), MAX_ITEMS), len(v))}"
    return scalar(v)


def table(rows: dict[str, Any], cls: str = "kv") -> str:
    """A mapping as a two-column table, name and value."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{value(v)}</td></tr>" for k, v in rows.items())
    return f"<table class='{cls}'>{body}</table>"


def records(items: list[dict[str, Any]]) -> str:
    """A list of mappings as one table, a column per key (in the order they first appear)."""
    keys = list(dict.fromkeys(k for item in items for k in item))
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{value(item.get(k))}</td>" for k in keys) + "</tr>"
                   for item in items[:MAX_ROWS])
    return f"<table class='records'><tr>{head}</tr>{body}</table>{_more(min(len(items), MAX_ROWS), len(items))}"


def metrics(values: Any) -> str:
    """The metrics section's body: a table per step (the mapping-valued entries), then the rest in one table."""
    if not isinstance(values, dict):  # a caller's text or list: shown as such, not as a dump
        return f"<p>{value(values)}</p>"
    steps = {k: v for k, v in values.items() if isinstance(v, dict)}
    rest = {k: v for k, v in values.items() if k not in steps}
    parts = [table(rest)] if rest else []
    parts += [f"<h3>{html.escape(str(k).replace('_', ' '))}</h3>{value(v)}" for k, v in steps.items()]
    return "".join(parts)
