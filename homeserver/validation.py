"""What a msgspec validation error points at, so that messages can name the field.

msgspec reports one problem as text: `Expected `int`, got `str` - at `$.limits.port``,
`Object missing required field `type``, `Object contains unknown field `x``. Config
and request-body errors both turn that into "which field, what kind of problem".
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

_WHERE = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")
_NAMED_FIELD = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>[^`]+)`$")
# A __post_init__ check names the field it rejects in front of its message.
_OWN_CHECK = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*): (?P<message>.*)$", re.DOTALL)


class Problem(msgspec.Struct, frozen=True):
    kind: Literal["missing", "unknown", "invalid"]
    path: tuple[str, ...]
    message: str

    @property
    def field(self) -> str:
        return ".".join(self.path)


def problem_of(error: msgspec.ValidationError) -> Problem:
    match = _WHERE.match(str(error))
    assert match is not None  # the pattern matches any text
    message = match["message"]
    path = tuple(name or index for name, index in _SEGMENT.findall(match["path"] or ""))
    named = _NAMED_FIELD.match(message)
    if named is not None:
        kind: Literal["missing", "unknown"] = "missing" if named["kind"] == "missing required" else "unknown"
        return Problem(kind, (*path, named["name"]), message)
    own = _OWN_CHECK.match(message)
    if own is not None:
        return Problem("invalid", (*path, own["name"]), own["message"])
    return Problem("invalid", path, message)
