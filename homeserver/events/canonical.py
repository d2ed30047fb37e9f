"""Canonical JSON (appendices, "Canonical JSON") and its integer range."""

from __future__ import annotations

import math
from typing import Any

import canonicaljson

#: Integers in canonical JSON must lie in [-(2**53)+1, (2**53)-1].
CANONICAL_INT_MIN = -(2**53) + 1
CANONICAL_INT_MAX = 2**53 - 1


class CanonicalJsonError(ValueError):
    """The value cannot be represented as canonical JSON."""


def is_canonical_int(value: Any) -> bool:
    """True if ``value`` is a JSON integer (not a bool) within the spec's range."""
    # bool is a subclass of int in Python but is a distinct JSON type.
    return type(value) is int and CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX


def normalise_numbers(value: Any) -> Any:
    """Return ``value`` with integral floats turned into ints.

    ``canonicaljson`` renders ``1e10`` as ``10000000000.0``, but the spec's own
    example requires ``10000000000``: numbers are integers "represented without
    exponents or decimal places". Non-integral floats have no canonical form.
    Objects without floats are returned unchanged (no copying on the hot path).
    """
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise CanonicalJsonError(f"non-integral number {value!r} is not canonical JSON")
        return int(value)  # also folds -0.0 into 0
    if isinstance(value, dict):
        changed = False
        out = {}
        for k, v in value.items():
            nv = normalise_numbers(v)
            changed = changed or nv is not v
            out[k] = nv
        return out if changed else value
    if isinstance(value, (list, tuple)):
        items = [normalise_numbers(v) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            return items
        return value
    return value


def encode_canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (UTF-8, sorted keys, no spaces)."""
    return canonicaljson.encode_canonical_json(normalise_numbers(value))


def check_canonical_values(value: Any, path: str = "") -> None:
    """Raise :class:`CanonicalJsonError` if ``value`` holds a float or an
    out-of-range integer anywhere.

    Room versions 6+ require servers to *strictly* enforce canonical JSON on
    received events, so unlike :func:`encode_canonical_json` this does not
    forgive integral floats.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, int):
            if not CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX:
                raise CanonicalJsonError(f"integer out of range at {where or '<root>'}")
        elif isinstance(v, float):
            raise CanonicalJsonError(f"float at {where or '<root>'}")
        elif isinstance(v, dict):
            for k, child in v.items():
                if not isinstance(k, str):
                    raise CanonicalJsonError(f"non-string key at {where or '<root>'}")
                stack.append((f"{where}.{k}", child))
        elif isinstance(v, (list, tuple)):
            for i, child in enumerate(v):
                stack.append((f"{where}[{i}]", child))
        else:
            raise CanonicalJsonError(f"unsupported type {type(v).__name__} at {where or '<root>'}")
