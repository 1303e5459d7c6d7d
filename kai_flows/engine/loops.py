"""Argo fan-out, as pure functions: the items of a loop, each child's `{{item}}` scope and node name, and the
outputs of the finished children aggregated for the tasks downstream.

Sources (argoproj/argo-workflows): workflow/controller/dag.go expandTask, operator.go processItem,
generateNodeName, expandSequence and processAggregateNodeOutputs; pkg/apis/workflow/v1alpha1/item.go (how an
item prints: `Item.String()` is its JSON with the quotes of a string trimmed). Node ids (FNV-1a of these names)
are `kai_flows.argo.names`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kai_flows.engine.variables import JsonNumber, RawJSON, go_json

__all__ = [
    "LoopError",
    "aggregate_outputs",
    "child_node_name",
    "expand_items",
    "expand_sequence",
    "item_scope",
    "item_string",
    "should_expand",
]


class LoopError(ValueError):
    """A loop whose items cannot be produced (a withParam that is not a JSON list, a bad withSequence)."""


def should_expand(with_items: list | None, with_param: str | None, with_sequence: dict | None) -> bool:
    """DAGTask.ShouldExpand: an empty `withItems` or `withParam: ""` means no loop at all (one plain task)."""
    return bool(with_items) or bool(with_param) or with_sequence is not None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON value {name}")


def expand_items(with_items: list | None, with_param: str | None, with_sequence: dict | None) -> list[Any]:
    """The loop items, in order (dag.go expandTask). An empty result means the task node is Skipped.

    withParam must be a JSON list (`null` counts as an empty one, as Go's json.Unmarshal reads it); its numbers
    keep their text (JsonNumber) so `{{item}}` prints `1.50` as Argo does.
    """
    if with_items:
        return list(with_items)
    if with_param:
        try:
            items = json.loads(with_param, parse_float=JsonNumber, parse_constant=_reject_constant)
        except ValueError as e:
            raise LoopError(f"withParam value could not be parsed as a JSON list: {with_param.strip()[:200]}: "
                            f"{e}") from None
        if items is None:
            return []
        if not isinstance(items, list):
            raise LoopError(f"withParam value could not be parsed as a JSON list: {with_param.strip()[:200]}: "
                            f"it is a JSON {type(items).__name__}, not a list")
        return items
    if with_sequence is not None:
        return expand_sequence(with_sequence)
    raise LoopError("the task has no withItems, withParam or withSequence to expand")


def _seq_int(seq: dict, key: str) -> int | None:
    value = seq.get(key)
    if value is None:
        return None
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not re.fullmatch(r"[+-]?[0-9]+", text):  # strconv.Atoi of the IntOrString
        raise LoopError(f"withSequence.{key} {value!r} is not an integer")
    return int(text)


def expand_sequence(seq: dict) -> list[str]:
    """withSequence {start, end | count, format} (expandSequence): integers from start, ascending or descending,
    each printed with the Go format (default `%d`); `count: 0` gives no items."""
    unknown = set(seq) - {"start", "end", "count", "format"}
    if unknown:
        raise LoopError(f"withSequence has unknown fields {sorted(unknown)}")
    if seq.get("count") is not None and seq.get("end") is not None:
        raise LoopError("only one of count or end can be defined in withSequence")  # validate.go
    start = _seq_int(seq, "start") or 0
    end = _seq_int(seq, "end")
    if end is None:
        count = _seq_int(seq, "count")
        if count is None:
            raise LoopError("neither end nor count was specified in withSequence")
        if count == 0:
            return []
        end = start + count - 1
    fmt = str(seq.get("format") or "%d")
    step = 1 if start <= end else -1
    return [_go_sprintf_int(fmt, i) for i in range(start, end + step, step)]


_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([a-zA-Z%])")


def _go_sprintf_int(fmt: str, value: int) -> str:
    """fmt.Sprintf(format, i) for one int argument, including Go's %!verb(...) and EXTRA markers."""
    used = False
    out: list[str] = []
    pos = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, _prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if used:
            out.append(f"%!{verb}(MISSING)")
            continue
        used = True
        spec = flags.replace("#", "") + width
        if verb in "dv":
            out.append(("%" + spec + "d") % value)
        elif verb in "xXo":
            alt = "#" if "#" in flags else ""
            text = ("%" + alt + spec + verb) % value
            out.append(text.replace("0o", "0") if verb == "o" else text)
        elif verb == "b":
            out.append(format(value, f"{'0' if '0' in flags else ''}{width}b"))
        elif verb == "c":
            out.append(chr(value))
        elif verb == "q":
            out.append("'" + chr(value) + "'")
        else:  # %s, %f, ... on an int
            out.append(f"%!{verb}(int={value})")
    out.append(fmt[pos:])
    if not used:
        out.append(f"%!(EXTRA int={value})")
    return "".join(out)


def _item_kind(item: Any) -> str:
    """Item.GetType on the item's JSON: Number, Bool, List (also JSON null), Map, String."""
    if isinstance(item, bool):
        return "Bool"
    if isinstance(item, int | float):
        return "Number"
    if item is None or isinstance(item, list | tuple):
        return "List"
    if isinstance(item, dict):
        return "Map"
    if isinstance(item, RawJSON):
        return _item_kind(json.loads(item.text))
    return "String"


def item_string(item: Any) -> str:
    """Item.String(): the item's JSON, a string's surrounding quotes cut off (its inner escapes stay, so `say "hi"`
    prints `say \\"hi\\"`), and `<>&` un-escaped (jsonutil.Fix)."""
    text = go_json(item)
    if text.startswith('"'):
        text = text[1:-1]
    return text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")


def item_scope(item: Any) -> dict[str, str]:
    """The `{{item}}` / `{{item.<field>}}` values of one loop child (processItem).

    A string, number or bool prints as Item.String() (`1.0` from YAML prints `1`); a map gives `item` as its
    compact JSON with sorted keys and each `item.<key>` as that value's Item.String(); a list gives its JSON.
    """
    kind = _item_kind(item)
    if kind == "Map":
        scope = {f"item.{k}": item_string(v) for k, v in item.items()}
        scope["item"] = go_json(item)
        return scope
    if kind == "List":
        return {"item": go_json(list(item) if item is not None else None)}
    return {"item": item_string(item)}


def child_node_name(task_node_name: str, index: int, item: Any) -> str:
    """`<wf>.<task>(<i>:<desc>)` (generateNodeName): desc is the item as %v prints it, a map as its sorted
    `key:value` pairs joined by commas, a list as `[a b]`; parentheses are dropped from desc."""
    kind = _item_kind(item)
    if kind == "Map":
        desc = ",".join(sorted(f"{k}:{item_string(v)}" for k, v in item.items()))
    elif kind == "List":
        desc = "[" + " ".join(item_string(v) for v in (item or [])) + "]"
    else:
        desc = item_string(item)
    clean = desc.replace("(", "").replace(")", "")
    return f"{task_node_name}({index}:{clean})"


def _result_item(result: str) -> Any:
    try:
        return RawJSON(result)
    except ValueError:
        return result


def aggregate_outputs(task_name: str, children: list[tuple[int, str, dict[str, str], str | None]]) -> dict[str, str]:
    """Scope entries for a finished fan-out task (processAggregateNodeOutputs).

    `children` are (index, phase, output parameters, result). Only Succeeded children count, in index order:
    `tasks.T.outputs.parameters` is a JSON list of their parameter maps, `tasks.T.outputs.parameters.P` a JSON
    list of P's values (strings), `tasks.T.outputs.result` a JSON list of their results, each embedded as JSON
    when it parses as JSON and as a JSON string otherwise. No children at all gives no entries.
    """
    if not children:
        return {}
    prefix = f"tasks.{task_name}.outputs"
    param_list: list[dict[str, str]] = []
    values: dict[str, list[str]] = {}
    results: list[Any] = []
    for _, phase, params, result in sorted(children, key=lambda c: c[0]):
        if phase != "Succeeded":
            continue
        if params:
            param_list.append(dict(params))
            for name, value in params.items():
                values.setdefault(name, []).append(value)
        if result is not None:
            results.append(_result_item(result))
    scope = {f"{prefix}.result": go_json(results), f"{prefix}.parameters": go_json(param_list)}
    for name, vals in values.items():
        scope[f"{prefix}.parameters.{name}"] = go_json(vals)
    return scope

