"""Argo's `when`, as a pure function (`depends` lives in `kai_flows.argo.depends`).

`when` is evaluated after `{{}}` substitution with Knetic/govaluate (the revision Argo pins,
v3.0.1-0.20171022003610-9aa49832a739), after Argo turns every govaluate *variable* token into a *string*
(workflow/controller/steps.go shouldExecute). That is why bare words compare as strings, why `a-b` is a
subtraction (an error on strings) and why values with `/ - space .` must be quoted. This module reimplements that
lexer, its lexer-state syntax check, its operator precedence and its typed operators, so that a `when` that fails
or passes on the cluster fails or passes here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kai_flows.argo.depends import ExpressionError

__all__ = ["ExpressionError", "evaluate_when"]


# ------------------------------------------------------------------------------------------------ when (govaluate)

# Token kinds (govaluate TokenKind).
UNKNOWN, PREFIX, NUMERIC, BOOLEAN, STRING, PATTERN, TIME, VARIABLE, FUNCTION, SEPARATOR, ACCESSOR = (
    "UNKNOWN", "PREFIX", "NUMERIC", "BOOLEAN", "STRING", "PATTERN", "TIME", "VARIABLE", "FUNCTION", "SEPARATOR",
    "ACCESSOR")
COMPARATOR, LOGICALOP, MODIFIER, CLAUSE, CLAUSE_CLOSE, TERNARY = (
    "COMPARATOR", "LOGICALOP", "MODIFIER", "CLAUSE", "CLAUSE_CLOSE", "TERNARY")

_VALUES = [NUMERIC, BOOLEAN, VARIABLE, STRING, PATTERN, TIME]
# lexerState.go: (isEOF, valid next kinds) per kind.
_STATES: dict[str, tuple[bool, set[str]]] = {
    UNKNOWN: (False, {PREFIX, NUMERIC, BOOLEAN, VARIABLE, PATTERN, FUNCTION, ACCESSOR, STRING, TIME, CLAUSE}),
    CLAUSE: (False, {PREFIX, NUMERIC, BOOLEAN, VARIABLE, PATTERN, FUNCTION, ACCESSOR, STRING, TIME, CLAUSE,
                     CLAUSE_CLOSE}),
    CLAUSE_CLOSE: (True, {COMPARATOR, MODIFIER, NUMERIC, BOOLEAN, VARIABLE, STRING, PATTERN, TIME, CLAUSE,
                          CLAUSE_CLOSE, LOGICALOP, TERNARY, SEPARATOR}),
    NUMERIC: (True, {MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, TERNARY, SEPARATOR}),
    BOOLEAN: (True, {MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, TERNARY, SEPARATOR}),
    STRING: (True, {MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, TERNARY, SEPARATOR}),
    TIME: (True, {MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, SEPARATOR}),
    PATTERN: (True, {MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, SEPARATOR}),
    VARIABLE: (True, {MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, TERNARY, SEPARATOR}),
    MODIFIER: (False, {PREFIX, NUMERIC, VARIABLE, FUNCTION, ACCESSOR, STRING, BOOLEAN, CLAUSE, CLAUSE_CLOSE}),
    COMPARATOR: (False, {PREFIX, NUMERIC, BOOLEAN, VARIABLE, FUNCTION, ACCESSOR, STRING, TIME, CLAUSE,
                         CLAUSE_CLOSE, PATTERN}),
    LOGICALOP: (False, {PREFIX, NUMERIC, BOOLEAN, VARIABLE, FUNCTION, ACCESSOR, STRING, TIME, CLAUSE,
                        CLAUSE_CLOSE}),
    PREFIX: (False, {NUMERIC, BOOLEAN, VARIABLE, FUNCTION, ACCESSOR, CLAUSE, CLAUSE_CLOSE}),
    TERNARY: (False, {PREFIX, NUMERIC, BOOLEAN, STRING, TIME, VARIABLE, FUNCTION, ACCESSOR, CLAUSE, SEPARATOR}),
    FUNCTION: (False, {CLAUSE}),
    ACCESSOR: (True, {CLAUSE, MODIFIER, COMPARATOR, LOGICALOP, CLAUSE_CLOSE, TERNARY, SEPARATOR}),
    SEPARATOR: (False, {PREFIX, NUMERIC, BOOLEAN, STRING, TIME, VARIABLE, FUNCTION, ACCESSOR, CLAUSE}),
}
_PREFIX_SYMBOLS = {"-", "!", "~"}
_MODIFIER_SYMBOLS = {"+", "-", "*", "/", "%", "**", "&", "|", "^", ">>", "<<"}
_LOGICAL_SYMBOLS = {"&&", "||"}
_COMPARATOR_SYMBOLS = {"==", "!=", ">", ">=", "<", "<=", "=~", "!~", "in"}
_TERNARY_SYMBOLS = {"?", ":", "??"}


class _GovalError(Exception):
    pass


@dataclass
class _Tok:
    kind: str
    value: Any


class _Stream:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def can_read(self) -> bool:
        return self.pos < len(self.text)

    def read(self) -> str:
        if self.pos >= len(self.text):
            raise _GovalError("Unexpected end of expression")  # Go panics here (a trailing backslash)
        self.pos += 1
        return self.text[self.pos - 1]

    def rewind(self, n: int) -> None:
        self.pos -= n


def _is_digit(c: str) -> bool:
    return c.isdecimal()


def _is_numeric(c: str) -> bool:
    return c.isdecimal() or c == "."


def _is_not_quote(c: str) -> bool:
    return c not in ("'", '"')


def _is_not_alnum(c: str) -> bool:
    return not (c.isdecimal() or c.isalpha() or c in "()[]" or not _is_not_quote(c))


def _is_variable_name(c: str) -> bool:
    return c.isalpha() or c.isdecimal() or c in "_."


def _read_until_false(stream: _Stream, include_ws: bool, break_ws: bool, escaping: bool,
                      cond: Callable[[str], bool]) -> tuple[str, bool]:
    """parsing.go readUntilFalse: (text, whether a terminator was met before the end)."""
    buf: list[str] = []
    while stream.can_read():
        c = stream.read()
        if escaping and c == "\\":
            buf.append(stream.read())
            continue
        if c.isspace():
            if break_ws and buf:
                return "".join(buf), True
            if not include_ws:
                continue
        if cond(c):
            buf.append(c)
        else:
            stream.rewind(1)
            return "".join(buf), True
    return "".join(buf), False


def _read_token_until_false(stream: _Stream, cond: Callable[[str], bool]) -> str:
    stream.rewind(1)
    return _read_until_false(stream, False, True, True, cond)[0]


def _read_token(stream: _Stream, state: str) -> _Tok | None:
    while stream.can_read():
        c = stream.read()
        if c.isspace():
            continue
        if _is_numeric(c):
            text = _read_token_until_false(stream, _is_numeric)
            if not text.isascii() or not re.fullmatch(r"\d*\.?\d*", text) or text == ".":
                raise _GovalError(f"Unable to parse numeric value '{text}' to float64")
            try:
                return _Tok(NUMERIC, float(text))
            except ValueError:
                raise _GovalError(f"Unable to parse numeric value '{text}' to float64") from None
        if c == ",":
            return _Tok(SEPARATOR, ",")
        if c == "[":
            text, done = _read_until_false(stream, True, False, True, lambda ch: ch != "]")
            if not done:
                raise _GovalError("Unclosed parameter bracket")
            stream.rewind(-1)
            return _Tok(VARIABLE, text)
        if c.isalpha():
            text = _read_token_until_false(stream, _is_variable_name)
            if text in ("true", "false"):
                return _Tok(BOOLEAN, text == "true")
            if text in ("in", "IN"):
                return _Tok(COMPARATOR, "in")
            if text.find(".") > 0:
                if text.endswith("."):
                    raise _GovalError(f"Hanging accessor on token '{text}'")
                parts = text.split(".")
                for part in parts[1:]:
                    if part and part[0].upper() != part[0]:
                        raise _GovalError(f"Unable to access unexported field '{part}' in token '{text}'")
                return _Tok(ACCESSOR, parts)
            return _Tok(VARIABLE, text)
        if not _is_not_quote(c):
            text, done = _read_until_false(stream, True, False, True, _is_not_quote)
            if not done:
                raise _GovalError("Unclosed string literal")
            stream.rewind(-1)
            t = _parse_time(text)
            return _Tok(TIME, t) if t is not None else _Tok(STRING, text)
        if c == "(":
            return _Tok(CLAUSE, "(")
        if c == ")":
            return _Tok(CLAUSE_CLOSE, ")")
        sym = _read_token_until_false(stream, _is_not_alnum)
        if PREFIX in _STATES[state][1] and sym in _PREFIX_SYMBOLS:
            return _Tok(PREFIX, sym)
        if sym in _MODIFIER_SYMBOLS:
            return _Tok(MODIFIER, sym)
        if sym in _LOGICAL_SYMBOLS:
            return _Tok(LOGICALOP, sym)
        if sym in _COMPARATOR_SYMBOLS:
            return _Tok(COMPARATOR, sym)
        if sym in _TERNARY_SYMBOLS:
            return _Tok(TERNARY, sym)
        raise _GovalError(f"Invalid token: '{sym}'")
    return None


def _lex(text: str) -> list[_Tok]:
    stream, state, tokens = _Stream(text), UNKNOWN, []
    while stream.can_read():
        tok = _read_token(stream, state)
        if tok is None:
            break
        state = tok.kind
        tokens.append(tok)
    return tokens


def _check(tokens: list[_Tok]) -> None:
    """checkBalance then checkExpressionSyntax (lexerState.go)."""
    depth = sum(1 if t.kind == CLAUSE else -1 if t.kind == CLAUSE_CLOSE else 0 for t in tokens)
    if depth != 0:
        raise _GovalError("Unbalanced parenthesis")
    state, last = UNKNOWN, None
    for tok in tokens:
        if tok.kind not in _STATES[state][1]:
            if last is not None and last.kind == VARIABLE and tok.kind == CLAUSE:
                raise _GovalError(f"Undefined function {last.value}")
            prev = _fmt(last.value) if last is not None else "<nil>"
            raise _GovalError(f"Cannot transition token types from {state} [{prev}] to {tok.kind} "
                              f"[{_fmt(tok.value)}]")
        state, last = tok.kind, tok
    if not _STATES[state][0]:
        raise _GovalError("Unexpected end of expression")


def _optimize(tokens: list[_Tok]) -> None:
    """optimizeTokens: a string right after `=~`/`!~` becomes a precompiled pattern."""
    for i, tok in enumerate(tokens[:-1]):
        if tok.kind == COMPARATOR and tok.value in ("=~", "!~") and tokens[i + 1].kind == STRING:
            tokens[i + 1] = _Tok(PATTERN, _compile(tokens[i + 1].value))


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise _GovalError(f"error parsing regexp: {e}") from None


# ---- time literals: a quoted string that parses as one of these layouts is a TIME (its Unix seconds).

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = "(?:mon|tue|wed|thu|fri|sat|sun)"
_MON = "(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_FRAC = r"(?:\.\d+)?"
_YMD = r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"
_TZ_COLON = r"(?P<tz>Z|[+-]\d{2}:\d{2})"
_TZ_PLAIN = r"(?P<tz>Z|[+-]\d{4})"
_TIME_LAYOUTS = [  # parsing.go tryParseTime, in its order
    rf"{_DAYS} {_MON} (?P<d>[ \d]?\d) (?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC} (?P<y>\d{{4}})",
    rf"{_DAYS} {_MON} (?P<d>[ \d]?\d) (?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC} [A-Z]{{3,5}} "
    rf"(?P<y>\d{{4}})",
    rf"{_DAYS} {_MON} (?P<d>\d{{2}}) (?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC} (?P<tz>[+-]\d{{4}}) "
    rf"(?P<y>\d{{4}})",
    r"(?P<h12>\d{1,2}):(?P<M>\d{2})(?P<ampm>AM|PM)",
    rf"{_YMD}T(?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC}{_TZ_COLON}",
    rf"{_YMD}",
    rf"{_YMD} (?P<H>\d{{1,2}}):(?P<M>\d{{2}})",
    rf"{_YMD} (?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC}",
    rf"{_YMD} (?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC}(?P<tz>[+-]\d{{2}}:\d{{2}})",
    rf"{_YMD}T(?P<H>\d{{1,2}}){_TZ_PLAIN}",
    rf"{_YMD}T(?P<H>\d{{1,2}}):(?P<M>\d{{2}}){_TZ_PLAIN}",
    rf"{_YMD}T(?P<H>\d{{1,2}}):(?P<M>\d{{2}}):(?P<S>\d{{2}}){_FRAC}{_TZ_PLAIN}",
]
_TIME_RES = [re.compile(p, re.IGNORECASE if i < 3 else 0) for i, p in enumerate(_TIME_LAYOUTS)]


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _parse_time(text: str) -> float | None:
    """Unix seconds of a time literal, or None. Zone-less layouts are read as UTC (the controller's time.Local)."""
    for rx in _TIME_RES:
        m = rx.fullmatch(text)
        if not m:
            continue
        g = m.groupdict()
        y = int(g["y"]) if g.get("y") else 0
        mon = (_MONTHS.index(g["mon"].lower()) + 1) if g.get("mon") else int(g.get("m") or 1)
        d = int(g["d"].strip()) if g.get("d") else 1
        hour = int(g["H"]) if g.get("H") else 0
        if g.get("h12"):
            hour = int(g["h12"])
            if not 1 <= hour <= 12:
                continue
            hour = hour % 12 + (12 if g["ampm"] == "PM" else 0)
        minute, sec = int(g.get("M") or 0), int(g.get("S") or 0)
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        mdays = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        if not (1 <= mon <= 12 and 1 <= d <= mdays[mon - 1] and hour < 24 and minute < 60 and sec < 60):
            continue
        offset = 0
        tz = g.get("tz")
        if tz and tz != "Z":
            digits = tz[1:].replace(":", "")
            offset = (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * (1 if tz[0] == "+" else -1)
        return float(_days_from_civil(y, mon, d) * 86400 + hour * 3600 + minute * 60 + sec - offset)
    return None


# ---- planning: recursive descent with govaluate's precedence (stagePlanner.go), left-associative per level.

_LEVELS: list[tuple[str, set[str]]] = [
    (SEPARATOR, {","}),
    (TERNARY, {"?", ":", "??"}),
    (LOGICALOP, {"||"}),
    (LOGICALOP, {"&&"}),
    (COMPARATOR, _COMPARATOR_SYMBOLS),
    (MODIFIER, {"&", "|", "^"}),
    (MODIFIER, {"<<", ">>"}),
    (MODIFIER, {"+", "-"}),
    (MODIFIER, {"*", "/", "%"}),
    (MODIFIER, {"**"}),
]


@dataclass
class _Node:
    op: str  # a symbol, "lit", "clause", "prefix:<sym>", "access"
    left: _Node | None = None
    right: _Node | None = None
    value: Any = None


class _Planner:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.toks, self.i = tokens, 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def level(self, n: int) -> _Node | None:
        if n == len(_LEVELS):
            return self.value()
        kind, symbols = _LEVELS[n]
        left = self.level(n + 1)
        while (t := self.peek()) is not None and t.kind == kind and t.value in symbols:
            self.i += 1
            left = _Node(t.value, left, self.level(n + 1))
        return left

    def value(self) -> _Node | None:
        t = self.peek()
        if t is None:
            return None
        self.i += 1
        if t.kind == CLAUSE:
            inner = self.level(0)
            self.i += 1  # the CLAUSE_CLOSE (balance was checked)
            return _Node("clause", right=inner)
        if t.kind == CLAUSE_CLOSE:
            self.i -= 1
            return None
        if t.kind == PREFIX:
            return _Node("prefix:" + t.value, right=self.value())
        if t.kind == ACCESSOR:
            if (n := self.peek()) is not None and n.kind == CLAUSE:
                self.value()
            return _Node("access", value=t.value)
        if t.kind == VARIABLE:
            return _Node("param", value=t.value)
        if t.kind in (NUMERIC, STRING, PATTERN, BOOLEAN, TIME):
            return _Node("lit", value=t.value)
        raise _GovalError(f"Unable to plan token kind: '{t.kind}', value: '{_fmt(t.value)}'")


_LOGICAL_FMT = "Value '%s' cannot be used with the logical operator '%s', it is not a bool"
_MODIFIER_FMT = "Value '%s' cannot be used with the modifier '%s', it is not a number"
_COMPARATOR_FMT = "Value '%s' cannot be used with the comparator '%s', it is not a number"
_TERNARY_FMT = "Value '%s' cannot be used with the ternary operator '%s', it is not a bool"
_PREFIX_FMT = "Value '%s' cannot be used with the prefix '%s'"
_SKIP = object()


def _is_num(v: Any) -> bool:
    return isinstance(v, float)


def _fmt(v: Any) -> str:
    """Go's %v for the values govaluate handles."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v, json=False)
    if isinstance(v, list):
        return "[" + " ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, re.Pattern):
        return v.pattern
    return str(v)


def go_float(v: float, *, json: bool) -> str:
    """A float64 as Go prints it: encoding/json (`json=True`) or fmt's %v.

    Both use the shortest digits that round-trip; JSON switches to exponent form below 1e-6 or from 1e21 and
    writes `1e-7`, %v does so below 1e-4 or from 1e21 and writes `1e-07`.
    """
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    if v == 0:
        return sign + "0"
    _, digits_t, exp = Decimal(repr(abs(v))).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0")
    exp += len(digits_t) - len(digits)
    sci = len(digits) - 1 + int(exp)
    lo = -6 if json else -4
    if lo <= sci < 21:
        if sci >= 0:
            whole = digits[: sci + 1].ljust(sci + 1, "0")
            frac = digits[sci + 1:]
            return sign + whole + ("." + frac if frac else "")
        return sign + "0." + "0" * (-sci - 1) + digits
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    width = 1 if json and sci < 0 else 2
    return f"{sign}{mant}e{'-' if sci < 0 else '+'}{abs(sci):0{width}d}"


def _type_error(fmt: str, value: Any, symbol: str) -> _GovalError:
    return _GovalError(fmt % (_fmt(value), symbol))


def _to_i64(v: float) -> int:
    return int(v) if math.isfinite(v) else 0


def _evaluate(node: _Node | None) -> Any:
    if node is None:
        return None
    op = node.op
    if op == "lit":
        return node.value
    if op == "param":
        raise _GovalError(f"No parameter '{node.value}' found.")
    if op == "access":
        raise _GovalError(f"No parameter '{node.value[0]}' found.")
    if op == "clause":
        return _evaluate(node.right)
    if op.startswith("prefix:"):
        sym = op[7:]
        right = _evaluate(node.right)
        if sym == "!":
            if not isinstance(right, bool):
                raise _type_error(_PREFIX_FMT, right, sym)
            return not right
        if not _is_num(right):
            raise _type_error(_PREFIX_FMT, right, sym)
        return -right if sym == "-" else float(~_to_i64(right))
    left = _evaluate(node.left)
    right: Any = None
    if op == "&&" and left is False:
        return False
    if op == "||" and left is True:
        return True
    if op == "??" and left is not None:
        return left
    skip = (op == "?" and left is False) or (op == ":" and left is not None)
    if not skip:
        right = _evaluate(node.right)
    return _apply(op, left, right, skip)


def _apply(op: str, left: Any, right: Any, skipped: bool) -> Any:
    if op in ("&&", "||"):
        if not isinstance(left, bool):
            raise _type_error(_LOGICAL_FMT, left, op)
        if not isinstance(right, bool):
            raise _type_error(_LOGICAL_FMT, right, op)
        return (left and right) if op == "&&" else (left or right)
    if op == "?":
        if not isinstance(left, bool):
            raise _type_error(_TERNARY_FMT, left, op)
        return right if left and not skipped else None
    if op in (":", "??"):
        return left if left is not None else right
    if op == ",":
        return [*left, right] if isinstance(left, list) else [left, right]
    if op == "==":
        return _deep_equal(left, right)
    if op == "!=":
        return not _deep_equal(left, right)
    if op in (">", ">=", "<", "<="):
        if not ((_is_num(left) and _is_num(right)) or (isinstance(left, str) and isinstance(right, str))):
            raise _type_error(_COMPARATOR_FMT, left, op)
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]
    if op in ("=~", "!~"):
        if not isinstance(left, str):
            raise _type_error(_COMPARATOR_FMT, left, op)
        if not isinstance(right, str | re.Pattern):
            raise _type_error(_COMPARATOR_FMT, right, op)
        pattern = right if isinstance(right, re.Pattern) else _compile(right)
        found = pattern.search(left) is not None
        return found if op == "=~" else not found
    if op == "in":
        if not isinstance(right, list):
            raise _type_error(_COMPARATOR_FMT, right, op)
        return any(type(left) is type(v) and left == v for v in right)
    if op == "+":
        if isinstance(left, str) or isinstance(right, str):
            return _fmt(left) + _fmt(right)
        if not (_is_num(left) and _is_num(right)):
            raise _type_error(_MODIFIER_FMT, left, op)
        return left + right
    # remaining modifiers are numeric on both sides
    if not _is_num(left):
        raise _type_error(_MODIFIER_FMT, left, op)
    if not _is_num(right):
        raise _type_error(_MODIFIER_FMT, right, op)
    try:
        return _NUMERIC_OPS[op](left, right)
    except ZeroDivisionError:  # Go float division: ±Inf, or NaN for 0/0
        return math.copysign(math.inf, left) * math.copysign(1.0, right) if left and op == "/" else math.nan
    except OverflowError:
        return math.inf
    except ValueError:  # fmod by zero, fractional power of a negative number
        return math.nan


_NUMERIC_OPS: dict[str, Callable[[float, float], float]] = {
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "%": lambda a, b: math.fmod(a, b),
    "**": lambda a, b: math.pow(a, b),
    "&": lambda a, b: float(_to_i64(a) & _to_i64(b)),
    "|": lambda a, b: float(_to_i64(a) | _to_i64(b)),
    "^": lambda a, b: float(_to_i64(a) ^ _to_i64(b)),
    "<<": lambda a, b: float((_to_i64(a) << _to_i64(b)) & (2**64 - 1)),
    ">>": lambda a, b: float((_to_i64(a) % 2**64) >> _to_i64(b)),
}


def _deep_equal(a: Any, b: Any) -> bool:
    """reflect.DeepEqual on govaluate values: same Go type and equal value (1 and '1' differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, re.Pattern):
        return a is b
    return bool(a == b)


def evaluate_when(expr: str) -> bool:
    """Evaluate an already-substituted `when` exactly as Argo's shouldExecute does; '' is True.

    Raises ExpressionError (naming the expression) where Argo marks the task Error.
    """
    if expr == "":
        return True
    try:
        tokens = _lex(expr)
        _check(tokens)
        _optimize(tokens)
        # Argo: variables (which it never supplies) become strings, so `foo != bar` needs no quotes.
        tokens = [_Tok(STRING, t.value) if t.kind == VARIABLE else t for t in tokens]
        _check(tokens)
        _optimize(tokens)
        planner = _Planner(tokens)
        tree = planner.level(0)
        result = _evaluate(tree)
    except _GovalError as e:
        raise ExpressionError(f"invalid 'when' expression {expr!r}: {e}") from None
    if not isinstance(result, bool):
        raise ExpressionError(f"'when' expression {expr!r}: expected a boolean, got {_fmt(result)}")
    return result
