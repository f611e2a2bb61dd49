"""Kubernetes resource quantities: parse, add, and print in kube's canonical form.

Enough of ``resource.Quantity`` to sum node capacities: decimal (``m``, ``k``, ``M``...),
binary (``Ki``, ``Mi``...) and exponent (``1e3``) suffixes. The sum is printed the way kube
canonicalizes: binary when the inputs were binary, with the largest suffix that keeps an
integer; decimal otherwise (``15800m``, ``16``, ``2k``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"\A([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE]?)\Z")


def parse(text: str) -> tuple[Decimal, bool]:
    """The value and whether it was written with a binary suffix; ValueError when malformed."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"quantity {text!r} is malformed")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(f"quantity {text!r} is malformed") from exc
    if suffix in _BINARY:
        return value * _BINARY[suffix], True
    if suffix[:1] in ("e", "E"):
        return value * Decimal(10) ** int(suffix[1:]), False
    return value * _DECIMAL[suffix], False


def format_quantity(value: Decimal, *, binary: bool) -> str:
    """kube's canonical text of ``value``."""
    if value == 0:
        return "0"
    if binary and value == value.to_integral_value():
        integer = int(value)
        for suffix, factor in reversed(_BINARY.items()):
            if integer % factor == 0:
                return f"{integer // factor}{suffix}"
        return str(integer)
    for suffix in ("E", "P", "T", "G", "M", "k", "", "m", "u", "n"):
        scaled = value / _DECIMAL[suffix]
        if scaled == scaled.to_integral_value():
            return f"{int(scaled)}{suffix}"
    return f"{int((value / _DECIMAL['n']).to_integral_value())}n"


def total(values: Iterable[str]) -> str:
    """The sum of quantities, skipping malformed ones."""
    result, binary, seen = Decimal(0), False, False
    for text in values:
        try:
            value, is_binary = parse(text)
        except ValueError:
            continue
        result += value
        binary = binary or is_binary
        seen = True
    return format_quantity(result, binary=binary) if seen else "0"
