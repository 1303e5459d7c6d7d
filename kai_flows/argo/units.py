"""Kubernetes quantities and Go durations, read as the cluster reads them.

Quantities (`500m`, `2`, `512Mi`, `1e3`): the Kubernetes client's `kubernetes.utils.parse_quantity`, after a check
of the grammar k8s.io/apimachinery's `ParseQuantity` accepts (the client also takes `NaN`, `1_000` or `1e3Mi`,
which the API server refuses). Durations: Go's `time.ParseDuration`, the one Argo applies to `timeout` and
backoff durations, and Argo's reading of a duration field (workflow/controller/retry.go parseStringToDuration:
a bare integer is seconds).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

__all__ = ["parse_duration", "parse_go_duration", "parse_quantity"]

# k8s.io/apimachinery/pkg/api/resource: a signed decimal, then one suffix: binary (Ki..Ei), decimal SI
# (n u m "" k M G T P E) or a decimal exponent (e3, E-2). UnmarshalJSON trims surrounding space first.
_QUANTITY = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity as an exact number; ValueError when Kubernetes would refuse it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    text = str(value).strip()
    if not _QUANTITY.fullmatch(text):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    # Imported on first use: `kubernetes` loads its whole API client, which the engine's start need not pay for.
    from kubernetes.utils.quantity import parse_quantity as k8s_parse_quantity

    return Decimal(k8s_parse_quantity(text))


# time.ParseDuration's units, in nanoseconds (µ is U+00B5, μ is U+03BC: Go accepts both).
_GO_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}
_MAX_NS = 1 << 63


def _leading_int(s: str) -> tuple[int, str]:
    i, x = 0, 0
    while i < len(s) and "0" <= s[i] <= "9":
        x = x * 10 + ord(s[i]) - 48
        if x > _MAX_NS:
            raise OverflowError
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Digits after the point: their value and scale, digits past int64 precision dropped (Go's leadingFraction)."""
    i, x, scale, overflow = 0, 0, 1.0, False
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            y = x * 10 + ord(s[i]) - 48
            if x > (_MAX_NS - 1) // 10 or y > _MAX_NS:
                overflow = True
            else:
                x, scale = y, scale * 10
        i += 1
    return x, scale, s[i:]


def parse_go_duration(text: str) -> float:
    """Seconds from Go's duration syntax (`time.ParseDuration`): `[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+` or `0`,
    units ns us µs ms s m h, e.g. `10s`, `1m30s`, `1.5h`, `300ms`. ValueError with Go's message otherwise."""
    orig, s, neg = text, text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    invalid = ValueError(f'time: invalid duration "{orig}"')
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        before = len(s)
        try:
            v, s = _leading_int(s)
        except OverflowError:
            raise invalid from None
        pre = len(s) != before
        f, scale, post = 0, 1.0, False
        if s[:1] == ".":
            s = s[1:]
            before = len(s)
            f, scale, s = _leading_fraction(s)
            post = len(s) != before
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        unit, s = s[:i], s[i:]
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        size = _GO_UNITS[unit]
        if v > _MAX_NS // size:
            raise invalid
        v *= size
        if f > 0:
            v += int(float(f) * (size / scale))  # float64, as Go: nanosecond-exact for fractions of hours
            if v > _MAX_NS:
                raise invalid
        total += v
        if total > _MAX_NS:
            raise invalid
    if not neg and total > _MAX_NS - 1:
        raise invalid
    return (-total if neg else total) / 1e9


_ATOI = re.compile(r"[+-]?[0-9]+")


def parse_duration(value: Any) -> float:
    """Seconds from an Argo duration field: a bare integer is seconds (strconv.Atoi), anything else Go's duration
    syntax (parseStringToDuration). ValueError when neither reads it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    text = str(value)
    if _ATOI.fullmatch(text):
        return float(int(text))
    return parse_go_duration(text)
