"""Argo's `{{...}}` substitution, as pure functions (util/template/*.go, docs/variables.md).

A template is scanned like valyala/fasttemplate does it: each `{{` opens a tag that the *first* following `}}`
closes (an unclosed `{{` is an error). A tag starting with `=` is an expr-lang expression evaluated over the scope
expanded into nested maps (util/expr/env GetFuncMap + util/expand); any other tag is looked up, trimmed of spaces,
in the scope (simple_template.go). A simple tag that is missing but ends in a nested `{{inner` resolves only the
inner one in this pass, leaving `{{outer.<value>}}` for a later pass, exactly as simpleReplace does.

Argo substitutes the JSON text of a whole task or template, inserting every value JSON-escaped, so mapping keys
are substituted too and values never break the structure; `substitute_obj` gives that result by substituting
keys and string values of the decoded object.

The expression language is the subset of expr-lang (github.com/expr-lang/expr) templates use: literals, member
and index access (`inputs.parameters['my-p']`), `== != < > <= >= && || ! and or not in contains startsWith
endsWith matches + - * / % ** ?? ?:`, list and map literals, and the functions Argo adds (`asInt`, `asFloat`,
`toJson`, `jsonpath`) plus the builtins `int float string len lower upper trim trimPrefix trimSuffix split join keys
values abs fromJSON toJSON`. Results are written as Go's json.Marshal writes them (a string as itself).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kai_flows.engine.expressions import ExpressionError, go_float

__all__ = [
    "JsonNumber",
    "RawJSON",
    "UnresolvedVariable",
    "evaluate_expression",
    "expand_scope",
    "find_tags",
    "go_json",
    "go_sprint",
    "substitute",
    "substitute_obj",
]


class UnresolvedVariable(KeyError):
    """A `{{tag}}` with no value in scope (Argo: "failed to resolve {{tag}}")."""

    def __init__(self, tag: str, text: str = "") -> None:
        super().__init__(tag)
        self.tag, self.text = tag, text

    def __str__(self) -> str:
        where = f" in {self.text[:120]!r}" if self.text else ""
        return f"failed to resolve {{{{{self.tag}}}}}{where}"


class JsonNumber(float):
    """A JSON number that keeps its source text, as Go's json.RawMessage keeps it (`1.50` stays `1.50`)."""

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


class RawJSON:
    """Already-valid JSON text that go_json embeds compacted, as Go embeds a json.RawMessage."""

    def __init__(self, text: str) -> None:
        json.loads(text, parse_constant=_reject_constant)  # ValueError if it is not JSON
        self.text = _compact(text)

    def __repr__(self) -> str:
        return f"RawJSON({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJSON) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _compact(text: str) -> str:
    """encoding/json compact with HTML escaping: drop whitespace outside strings, escape <>& U+2028/9 inside."""
    out, in_str, esc = [], False, False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            out.append(_HTML_ESCAPES.get(c, c))
        elif c in " \t\r\n":
            continue
        else:
            in_str = c == '"'
            out.append(c)
    return "".join(out)


# ------------------------------------------------------------------------------------------------ Go formatting

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _HTML_ESCAPES[m.group()], out)


def go_json(value: Any, *, indent: str | None = None, _level: int = 0) -> str:
    """Go's json.Marshal (or MarshalIndent with `indent`): sorted map keys, HTML-escaped, Go number format."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, RawJSON):
        return value.text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"json: unsupported value: {go_float(value, json=False)}")
        return go_float(value, json=True)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, Mapping):
        items = [(_go_string(str(k)), v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
        parts = [k + (": " if indent is not None else ":") + go_json(v, indent=indent, _level=_level + 1)
                 for k, v in items]
        return _join("{", parts, "}", indent, _level)
    if isinstance(value, list | tuple):
        return _join("[", [go_json(v, indent=indent, _level=_level + 1) for v in value], "]", indent, _level)
    raise ExpressionError(f"json: unsupported type {type(value).__name__}")


def _join(open_: str, parts: list[str], close: str, indent: str | None, level: int) -> str:
    if not parts:
        return open_ + close
    if indent is None:
        return open_ + ",".join(parts) + close
    inner = "\n" + indent * (level + 1)
    return open_ + inner + ("," + inner).join(parts) + "\n" + indent * level + close


def go_sprint(value: Any) -> str:
    """Go's fmt %v for JSON-like values (expr-lang `string()`, Argo's fmt.Sprintf("%v", ...))."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value, json=False)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_sprint(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    return str(value)


# ------------------------------------------------------------------------------------------------ tags


def _split_tags(text: str) -> list[tuple[bool, str]]:
    """fasttemplate's scan: (is_tag, piece) in order. An unclosed `{{` is an error, as in fasttemplate.New."""
    out: list[tuple[bool, str]] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            out.append((False, text[pos:]))
            return out
        end = text.find("}}", start + 2)
        if end < 0:
            raise ExpressionError(f"cannot find end tag '}}}}' in {text[:120]!r} starting from {text[start:][:40]!r}")
        out.append((False, text[pos:start]))
        out.append((True, text[start + 2:end]))
        pos = end + 2


def find_tags(text: str) -> list[str]:
    """The tags of `text` in order, trimmed; an expression tag keeps its leading `=` (`=inputs.parameters.x`)."""
    return [piece if piece.startswith("=") else piece.strip() for is_tag, piece in _split_tags(text) if is_tag]


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    for p in prefixes:
        base = p.rstrip(".")
        if name == base or name.startswith(base + "."):
            return True
    return False


def substitute(text: str, scope: Mapping[str, str], *, allow_unresolved: Iterable[str] = ()) -> str:
    """Replace every `{{name}}` and `{{=expr}}` of `text` from `scope` (one pass, like template.Replace).

    A tag whose name (or, for an expression, a name it reads) has no value raises UnresolvedVariable, unless
    it starts with one of the `allow_unresolved` prefixes (e.g. "workflow.outputs." or "item"), in which case the
    tag is left as written for a later pass. A malformed or failing expression raises ExpressionError.
    """
    prefixes = tuple(allow_unresolved)
    out: list[str] = []
    env: dict[str, Any] | None = None
    for is_tag, piece in _split_tags(text):
        if not is_tag:
            out.append(piece)
        elif piece.startswith("="):
            if env is None:
                env = expand_scope(scope)
            out.append(_replace_expression(piece[1:], env, text, prefixes))
        else:
            out.append(_replace_simple(piece, scope, text, prefixes))
    return "".join(out)


def _replace_simple(tag: str, scope: Mapping[str, str], text: str, prefixes: tuple[str, ...]) -> str:
    name = tag.strip()
    if name in scope:
        value = scope[name]
        if not isinstance(value, str):
            raise ExpressionError(f"failed to resolve {{{{{tag}}}}} to string in {text[:120]!r}")
        return value
    idx = tag.rfind("{{")
    if idx > 0 and tag[idx + 2:] in scope and isinstance(scope[tag[idx + 2:]], str):
        # simpleReplace: only the nested tag resolves now; the outer one stays for a later pass.
        return "{{" + tag[:idx] + scope[tag[idx + 2:]]
    if _allowed(name, prefixes):
        return "{{" + tag + "}}"
    raise UnresolvedVariable(name, text)


def _replace_expression(expr: str, env: dict[str, Any], text: str, prefixes: tuple[str, ...]) -> str:
    try:
        return _format_result(evaluate_expression(expr, env), expr)
    except _Unresolved as e:
        if any(_allowed(p, prefixes) for p in e.paths):
            return "{{=" + expr + "}}"
        raise UnresolvedVariable(e.paths[0], text) from None


def _format_result(value: Any, expr: str) -> str:
    """expressionReplace: json.Marshal of the result, a string written as itself."""
    if value is None:
        raise ExpressionError(f"failed to evaluate expression {expr!r}: result is nil")
    if isinstance(value, str):
        return value
    return go_json(value)


def substitute_obj(obj: Any, scope: Mapping[str, str], *, allow_unresolved: Iterable[str] = ()) -> Any:
    """`substitute` over a decoded JSON/YAML object: mapping keys and string values, recursively; a new object.

    Argo substitutes the JSON text of the object with JSON-escaped values, which is the same thing: keys are
    text too, and a value containing quotes or newlines stays one string.
    """
    prefixes = tuple(allow_unresolved)
    if isinstance(obj, str):
        return substitute(obj, scope, allow_unresolved=prefixes)
    if isinstance(obj, Mapping):
        return {substitute(str(k), scope, allow_unresolved=prefixes) if isinstance(k, str) else k:
                substitute_obj(v, scope, allow_unresolved=prefixes) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [substitute_obj(v, scope, allow_unresolved=prefixes) for v in obj]
    return obj


def expand_scope(scope: Mapping[str, Any]) -> dict[str, Any]:
    """util/expand.Expand: dotted keys become nested maps; a key that is also the parent of others is dropped."""
    keys = sorted(scope)

    def is_parent(key: str) -> bool:
        i = bisect.bisect_left(keys, key + ".")
        return i < len(keys) and keys[i].startswith(key + ".")

    parents = {k for k in keys if is_parent(k)}
    env: dict[str, Any] = {}
    for key in keys:
        if key in parents:
            continue
        node = env
        *path, last = key.split(".")
        for part in path:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[last] = scope[key]
    return env


# ------------------------------------------------------------------------------------------------ expr-lang


class _Unresolved(Exception):
    def __init__(self, paths: list[str]) -> None:
        super().__init__(paths[0])
        self.paths = paths


class _ExprError(Exception):
    pass


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
      |(?:\d[\d_]*)?\.\d[\d_]*(?:[eE][+-]?\d+)?|\d[\d_]*(?:\.(?!\.)\d*)?(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
  | (?P<op>\?\.|\?\?|\.\.|==|!=|<=|>=|&&|\|\||\*\*|[-+*/%^<>!?:.,()\[\]{}])
""", re.VERBOSE)

_BINARY = {
    "or": 10, "||": 10, "and": 15, "&&": 15,
    "==": 20, "!=": 20, "<": 20, ">": 20, "<=": 20, ">=": 20, "in": 20, "matches": 20, "contains": 20,
    "startsWith": 20, "endsWith": 20,
    "+": 30, "-": 30, "*": 60, "/": 60, "%": 60, "**": 100, "^": 100, "??": 500,
}
_RIGHT_ASSOC = {"**", "^"}
_UNARY = {"not": 50, "!": 50, "-": 90, "+": 90}
_NEGATABLE = {"in", "matches", "contains", "startsWith", "endsWith"}


@dataclass
class _T:
    kind: str  # num, str, name, op, eof
    value: Any


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
            "'": "'", '"': '"'}


def _unquote(lit: str) -> str:
    """expr-lang's string literals: backquotes are raw; '...' and "..." take Go escapes."""
    if lit[0] == "`":
        return lit[1:-1]
    body, out, i = lit[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(nxt)
        digits = body[i + 2:i + 2 + width] if width else body[i + 1:i + 4]
        base = 16 if width else 8
        if not re.fullmatch("[0-9a-fA-F]+" if width else "[0-7]{3}", digits or "-") or \
                len(digits) != (width or 3):
            raise _ExprError(f"invalid escape in string literal {lit}")
        out.append(chr(int(digits, base)))
        i += 2 + width if width else 4
    return "".join(out)


def _lex_expr(src: str) -> list[_T]:
    out, pos = [], 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise _ExprError(f"unexpected character {src[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "ws":
            continue
        if kind == "num":
            clean = text.replace("_", "")
            if clean[:2].lower() in ("0x", "0o", "0b"):
                out.append(_T("num", int(clean, 0)))
            elif re.fullmatch(r"\d+", clean):
                out.append(_T("num", int(clean)))
            else:
                out.append(_T("num", float(clean)))
        elif kind == "str":
            out.append(_T("str", _unquote(text)))
        else:
            out.append(_T(kind or "op", text))
    out.append(_T("eof", None))
    return out


@dataclass
class _E:
    kind: str  # lit, ident, member, index, call, unary, binary, cond, array, map
    value: Any = None
    args: tuple[Any, ...] = ()


class _ExprParser:
    def __init__(self, tokens: list[_T]) -> None:
        self.t, self.i = tokens, 0

    def peek(self, k: int = 0) -> _T:
        return self.t[min(self.i + k, len(self.t) - 1)]

    def take(self) -> _T:
        tok = self.t[self.i]
        self.i = min(self.i + 1, len(self.t) - 1)
        return tok

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok.value != value or tok.kind not in ("op", "name"):
            raise _ExprError(f"expected {value!r}, found {tok.value if tok.kind != 'eof' else 'end of expression'!r}")

    def binary_op(self) -> tuple[str, bool] | None:
        tok = self.peek()
        if tok.kind == "name" and tok.value == "not" and self.peek(1).kind == "name" and \
                self.peek(1).value in _NEGATABLE:
            return self.peek(1).value, True
        if tok.kind in ("op", "name") and tok.value in _BINARY:
            return tok.value, False
        return None

    def expression(self, precedence: int = 0) -> _E:
        left = self.unary()
        while (found := self.binary_op()) is not None:
            op, negated = found
            prec = _BINARY[op]
            if prec < precedence:
                break
            self.take()
            if negated:
                self.take()
            right = self.expression(prec if op in _RIGHT_ASSOC else prec + 1)
            left = _E("binary", op, (left, right))
            if negated:
                left = _E("unary", "not", (left,))
        if precedence == 0 and self.peek().kind == "op" and self.peek().value == "?":
            self.take()
            yes = self.expression()
            self.expect(":")
            no = self.expression()
            left = _E("cond", None, (left, yes, no))
        return left

    def unary(self) -> _E:
        tok = self.peek()
        if tok.kind in ("op", "name") and tok.value in _UNARY:
            self.take()
            return self.postfix(_E("unary", tok.value, (self.expression(_UNARY[tok.value]),)))
        return self.postfix(self.primary())

    def primary(self) -> _E:
        tok = self.take()
        if tok.kind in ("num", "str"):
            return _E("lit", tok.value)
        if tok.kind == "name":
            if tok.value in ("true", "false"):
                return _E("lit", tok.value == "true")
            if tok.value == "nil":
                return _E("lit", None)
            if self.peek().value == "(" and self.peek().kind == "op":
                return _E("call", tok.value, self.arguments())
            return _E("ident", tok.value)
        if tok.kind == "op" and tok.value == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.value == "[":
            items = []
            while not (self.peek().kind == "op" and self.peek().value == "]"):
                items.append(self.expression())
                if self.peek().value != ",":
                    break
                self.take()
            self.expect("]")
            return _E("array", None, tuple(items))
        if tok.kind == "op" and tok.value == "{":
            pairs = []
            while not (self.peek().kind == "op" and self.peek().value == "}"):
                key = self.take()
                if key.kind not in ("name", "str", "num"):
                    raise _ExprError(f"a map key must be a name, string or number, found {key.value!r}")
                self.expect(":")
                pairs.append((str(key.value), self.expression()))
                if self.peek().value != ",":
                    break
                self.take()
            self.expect("}")
            return _E("map", None, tuple(pairs))
        found = "end of expression" if tok.kind == "eof" else tok.value
        raise _ExprError(f"unexpected token {found!r}")

    def arguments(self) -> tuple[_E, ...]:
        self.expect("(")
        args = []
        while not (self.peek().kind == "op" and self.peek().value == ")"):
            args.append(self.expression())
            if self.peek().value != ",":
                break
            self.take()
        self.expect(")")
        return tuple(args)

    def postfix(self, node: _E) -> _E:
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value in (".", "?."):
                self.take()
                name = self.take()
                if name.kind != "name":
                    raise _ExprError(f"expected a name after {tok.value!r}")
                if self.peek().kind == "op" and self.peek().value == "(":
                    raise _ExprError(f"method call {name.value}() is not supported here")  # e.g. sprig.x()
                node = _E("member", tok.value == "?.", (node, _E("lit", name.value)))
            elif tok.kind == "op" and tok.value == "[":
                self.take()
                index = self.expression()
                self.expect("]")
                node = _E("member", False, (node, index))
            else:
                return node


def _path(node: _E) -> str | None:
    """The dotted name a member chain reads (`inputs.parameters['x']` -> inputs.parameters.x), if static."""
    if node.kind == "ident":
        return node.value
    if node.kind == "member":
        base = _path(node.args[0])
        key = node.args[1]
        if base is not None and key.kind == "lit" and isinstance(key.value, str | int):
            return f"{base}.{key.value}"
    return None


def _type_name(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return type(v).__name__


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    """expr-lang runtime.Equal: numbers compare by value across int/float; other types must match."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        if isinstance(a, list) and isinstance(b, list):
            pass
        elif isinstance(a, dict) and isinstance(b, dict):
            pass
        else:
            return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _go_atoi(s: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        raise _ExprError(f"invalid operation: int({s})")
    return int(s)


def _go_parse_float(s: str) -> float:
    if not re.fullmatch(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI]nf(?:inity)?|[nN]a[nN])", s):
        raise _ExprError(f'strconv.ParseFloat: parsing "{s}": invalid syntax')
    return float(s)


def _to_int(v: Any) -> int:
    if isinstance(v, str):
        return _go_atoi(v)
    if _is_number(v):
        return int(v)
    raise _ExprError(f"invalid operation: int({_type_name(v)})")


def _to_float(v: Any) -> float:
    if isinstance(v, str):
        return _go_parse_float(v)
    if _is_number(v):
        return float(v)
    raise _ExprError(f"invalid operation: float({_type_name(v)})")


def _from_json(s: Any) -> Any:
    if not isinstance(s, str):
        raise _ExprError(f"fromJSON expects a string, got {_type_name(s)}")
    try:
        return json.loads(s, parse_int=float, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as e:
        raise _ExprError(f"invalid JSON: {e}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character in {name}")


_JSONPATH_STEP = re.compile(r"\.\.|\.\*|\.([A-Za-z_$][\w$-]*)|\[\s*\*\s*\]|\[\s*(-?\d+)\s*\]|\[\s*'([^']*)'\s*\]"
                            r'|\[\s*"([^"]*)"\s*\]')


def _jsonpath(doc: Any, path: Any) -> Any:
    """The subset of JSONPath used in templates: `$`, `.key`, `['key']`, `[n]`, `[*]`, `.*`."""
    if not isinstance(doc, str) or not isinstance(path, str):
        raise _ExprError("jsonpath expects (string, string)")
    data = _from_json(doc)
    if not path.startswith("$"):
        raise _ExprError(f"jsonpath {path!r}: must start with '$'")
    values, many, pos = [data], False, 1
    while pos < len(path):
        m = _JSONPATH_STEP.match(path, pos)
        if not m or m.group() == "..":
            raise _ExprError(f"jsonpath {path!r}: unsupported at {path[pos:]!r}")
        pos = m.end()
        key = m.group(1) or m.group(3) or m.group(4)
        nxt = []
        for v in values:
            if m.group() in (".*",) or m.group().replace(" ", "") == "[*]":
                many = True
                nxt += list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, list) else []
            elif m.group(2) is not None:
                if not isinstance(v, list) or not -len(v) <= int(m.group(2)) < len(v):
                    raise _ExprError(f"jsonpath {path!r}: index {m.group(2)} out of range")
                nxt.append(v[int(m.group(2))])
            else:
                if not isinstance(v, dict) or key not in v:
                    raise _ExprError(f"jsonpath {path!r}: key {key!r} not found")
                nxt.append(v[key])
        values = nxt
    return values if many else values[0]


def _len(v: Any) -> int:
    if isinstance(v, str | list | dict):
        return len(v)
    raise _ExprError(f"invalid argument for len (type {_type_name(v)})")


def _str_fn(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if not args or not isinstance(args[0], str):
            raise _ExprError(f"{name}() expects a string")
        return fn(*args)
    return call


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "asInt": _to_int, "int": _to_int,
    "asFloat": _to_float, "float": _to_float,
    "string": go_sprint,
    "toJson": go_json,
    "toJSON": lambda v: go_json(v, indent="  "),
    "fromJSON": _from_json,
    "jsonpath": _jsonpath,
    "len": _len,
    "lower": _str_fn("lower", str.lower),
    "upper": _str_fn("upper", str.upper),
    "trim": _str_fn("trim", lambda s, cut=None: s.strip() if cut is None else s.strip(cut)),
    "trimPrefix": _str_fn("trimPrefix", lambda s, p: s[len(p):] if s.startswith(p) else s),
    "trimSuffix": _str_fn("trimSuffix", lambda s, p: s[: -len(p)] if p and s.endswith(p) else s),
    "split": _str_fn("split", lambda s, sep: s.split(sep) if sep else list(s)),
    "join": lambda xs, sep="": sep.join(go_sprint(x) if not isinstance(x, str) else x for x in xs),
    "keys": lambda m: sorted(m) if isinstance(m, dict) else _fail("keys() expects a map"),
    "values": lambda m: [m[k] for k in sorted(m)] if isinstance(m, dict) else _fail("values() expects a map"),
    "abs": lambda x: abs(x) if _is_number(x) else _fail("abs() expects a number"),
}


def _fail(msg: str) -> Any:
    raise _ExprError(msg)


class _Evaluator:
    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = env
        self.missing: list[str] = []

    def run(self, node: _E) -> Any:
        return getattr(self, "_" + node.kind)(node)

    def _lit(self, node: _E) -> Any:
        return node.value

    def _ident(self, node: _E) -> Any:
        if node.value not in self.env:
            raise _Unresolved([node.value])
        return self.env[node.value]

    def _member(self, node: _E) -> Any:
        try:
            obj = self.run(node.args[0])
        except _Unresolved as e:  # report the whole static path that could not be read
            path = _path(node)
            if path is not None and len(e.paths) == 1 and path.startswith(e.paths[0]):
                raise _Unresolved([path]) from None
            raise
        key = self.run(node.args[1])
        if obj is None:
            if node.value:  # ?.
                return None
            path = _path(node)
            if self.missing and path is not None:
                raise _Unresolved([*self.missing, path])
            raise _ExprError(f"cannot fetch {go_sprint(key)} from <nil>")
        if isinstance(obj, dict):
            if not isinstance(key, str):
                raise _ExprError(f"cannot use {_type_name(key)} as a map key")
            if key not in obj:
                path = _path(node)
                if path is not None:
                    self.missing.append(path)
                return None
            return obj[key]
        if isinstance(obj, list | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _ExprError(f"cannot fetch {go_sprint(key)} from {_type_name(obj)}")
            if not -len(obj) <= key < len(obj):
                raise _ExprError(f"index out of range: {key} (array length is {len(obj)})")
            return obj[key]
        raise _ExprError(f"cannot fetch {go_sprint(key)} from {_type_name(obj)}")

    def _call(self, node: _E) -> Any:
        fn = _FUNCTIONS.get(node.value)
        if fn is None:
            if node.value in self.env:
                raise _ExprError(f"{node.value} is not callable")
            raise _ExprError(f"unknown function {node.value}()")
        args = [self.run(a) for a in node.args]
        if None in args and self.missing:
            raise _Unresolved(self.missing)
        try:
            return fn(*args)
        except TypeError as e:
            raise _ExprError(f"{node.value}(): {e}") from None

    def _array(self, node: _E) -> Any:
        return [self.run(a) for a in node.args]

    def _map(self, node: _E) -> Any:
        return {k: self.run(v) for k, v in node.args}

    def _cond(self, node: _E) -> Any:
        cond = self.run(node.args[0])
        if not isinstance(cond, bool):
            raise _ExprError(f"non-bool expression (type {_type_name(cond)}) used as condition")
        return self.run(node.args[1] if cond else node.args[2])

    def _unary(self, node: _E) -> Any:
        v = self.run(node.args[0])
        if node.value in ("!", "not"):
            if not isinstance(v, bool):
                raise _ExprError(f"invalid operation: {node.value} ({_type_name(v)})")
            return not v
        if not _is_number(v):
            raise _ExprError(f"invalid operation: {node.value} ({_type_name(v)})")
        return -v if node.value == "-" else v

    def _binary(self, node: _E) -> Any:
        op = node.value
        left = self.run(node.args[0])
        if op in ("&&", "and", "||", "or"):
            if not isinstance(left, bool):
                raise _ExprError(f"invalid operation: {op} (mismatched types {_type_name(left)} and bool)")
            if (op in ("&&", "and")) != left:
                return left
            right = self.run(node.args[1])
            if not isinstance(right, bool):
                raise _ExprError(f"invalid operation: {op} (mismatched types bool and {_type_name(right)})")
            return right
        if op == "??":
            return left if left is not None else self.run(node.args[1])
        right = self.run(node.args[1])
        return _binary(op, left, right)


def _binary(op: str, a: Any, b: Any) -> Any:
    def mismatch() -> _ExprError:
        return _ExprError(f"invalid operation: {op} (mismatched types {_type_name(a)} and {_type_name(b)})")

    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op in ("<", ">", "<=", ">="):
        if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
            raise mismatch()
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    if op == "in":
        if isinstance(b, list):
            return any(_equal(a, x) for x in b)
        if isinstance(b, dict):
            if not isinstance(a, str):
                raise mismatch()
            return a in b
        raise mismatch()
    if op in ("contains", "startsWith", "endsWith", "matches"):
        if not (isinstance(a, str) and isinstance(b, str)):
            raise mismatch()
        if op == "matches":
            try:
                return re.search(b, a) is not None
            except re.error as e:
                raise _ExprError(f"error parsing regexp {b!r}: {e}") from None
        return {"contains": b in a, "startsWith": a.startswith(b), "endsWith": a.endswith(b)}[op]
    if op == "+":
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        if isinstance(a, list) and isinstance(b, list):
            return a + b
    if not (_is_number(a) and _is_number(b)):
        raise mismatch()
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            return math.copysign(math.inf, a) * math.copysign(1.0, b) if a else math.nan
        return a / b
    if op == "%":
        if not (isinstance(a, int) and isinstance(b, int)):
            raise mismatch()
        if b == 0:
            raise _ExprError("integer divide by zero")
        rem = abs(a) % abs(b)  # Go's % truncates toward zero: the sign follows the dividend
        return -rem if a < 0 else rem
    try:
        return math.pow(a, b)  # ** and ^
    except (OverflowError, ValueError):
        return math.inf if a > 0 else math.nan


def evaluate_expression(expr: str, env: Mapping[str, Any]) -> Any:
    """Evaluate an expr-lang expression over `env` (nested maps: use `expand_scope` on a flat scope).

    Raises ExpressionError for a syntax or type error; a read of a name `env` lacks raises the private
    _Unresolved, which `substitute` turns into UnresolvedVariable.
    """
    try:
        parser = _ExprParser(_lex_expr(expr))
        tree = parser.expression()
        if parser.peek().kind != "eof":
            raise _ExprError(f"unexpected token {parser.peek().value!r}")
        evaluator = _Evaluator(env)
        result = evaluator.run(tree)
    except _ExprError as e:
        raise ExpressionError(f"failed to evaluate expression {expr!r}: {e}") from None
    if result is None and evaluator.missing:
        raise _Unresolved(evaluator.missing)
    return result
