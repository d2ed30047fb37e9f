"""Push rule evaluation (spec: Client-Server API, "Push Notifications" / "Conditions").

Pure and synchronous. The send path builds one `PushEvent` per event and asks
`actions_for` once per local member of the room, so the work is split accordingly:

- `PushEvent` flattens the event once into dotted keys (with the spec's `\\.` / `\\\\`
  escaping) and memoises, per event, the result of every condition that does not
  depend on the user, and per rule segment what is left to decide per user;
- a `RuleSet` is compiled once, as segments: the server-default segments are shared by
  every user who did not change them. Globs are compiled once per pattern (`Glob`,
  linear time), and each rule's conditions are split into the user-independent part
  and the part that needs the user's ID or display name (evaluated per user, e.g.
  `.m.rule.is_user_mention`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import msgspec

# The default for a `notifications` key missing from the power levels (spec:
# m.room.power_levels, "notifications.room" defaults to 50).
DEFAULT_NOTIFICATION_LEVEL = 50

# Parts of a PDU that no rule can sensibly match and that are big: not flattened.
_UNFLATTENED = frozenset({"signatures", "hashes", "unsigned", "auth_events", "prev_events"})

# Historical actions the spec says to ignore (a ["dont_notify"] rule is an empty one).
_IGNORED_ACTIONS = frozenset({"dont_notify", "coalesce"})

_serials = itertools.count(1)


# --- dotted keys --------------------------------------------------------------------


def escape_key_part(part: str) -> str:
    return part.replace("\\", "\\\\").replace(".", "\\.")


def split_key(key: str) -> list[str]:
    """A dotted property path into its property names (spec appendix: `\\.` is a dot,
    `\\\\` a backslash, any other backslash is literal)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def canonical_key(key: str) -> str:
    """The one spelling of a path that `PushEvent` uses, whatever redundant escapes the
    rule used (e.g. `\\x` stays a literal backslash and x)."""
    return ".".join(escape_key_part(p) for p in split_key(key))


def _flatten(event: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted path -> value, for strings, integers, booleans, null and arrays."""
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Mapping[str, Any]]] = [("", event)]
    while stack:
        prefix, mapping = stack.pop()
        for name, value in mapping.items():
            if not isinstance(name, str):
                continue
            if not prefix and name in _UNFLATTENED:
                continue
            path = prefix + escape_key_part(name)
            if isinstance(value, Mapping):
                stack.append((path + ".", value))
            elif value is None or isinstance(value, (str, int, bool, list)):
                flat[path] = value
    return flat


# --- globs --------------------------------------------------------------------------

# A word boundary (spec): the start or end of the value, or a character not in
# [A-Za-z0-9_].
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_WORD_BEFORE = r"(?<![A-Za-z0-9_])"
_WORD_AFTER = r"(?![A-Za-z0-9_])"


class _Piece:
    """A glob piece between stars: literal characters and `?`, so of fixed length."""

    __slots__ = ("length", "regex", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.length = len(text)
        # Only pieces with `?` need a regex (literals and `.`: one attempt per place);
        # plain ones use str.find, which is linear.
        self.regex = re.compile("".join("." if c == "?" else re.escape(c) for c in text), re.DOTALL) if "?" in text else None

    def find(self, s: str, start: int, end: int) -> int:
        """The first place in s[start:end] where the piece fits entirely, or -1."""
        if self.regex is None:
            return s.find(self.text, start, end)
        found = self.regex.search(s, start, end)
        return -1 if found is None else found.start()

    def at(self, s: str, pos: int) -> bool:
        if self.regex is None:
            return s.startswith(self.text, pos)
        return self.regex.match(s, pos) is not None


class Glob:
    """A glob (`*` zero or more characters, `?` exactly one), case-insensitive.

    Not a regex with `.*?`: Python's backtracking engine takes exponential time on
    patterns like `*a*a*a*b` against a long body (minutes for 200 characters), and
    anyone can put such a pattern in their own rules, which run on the send path.
    Instead the pattern is split at `*` into fixed-length pieces placed leftmost-first,
    which is exact for globs and at worst O(len(value) × len(pattern)).
    """

    __slots__ = ("first", "last", "middle", "star")

    def __init__(self, pattern: str) -> None:
        pieces = [_Piece(p) for p in pattern.lower().split("*")]
        self.star = len(pieces) > 1
        self.first = pieces[0]
        self.last = pieces[-1]
        self.middle = [p for p in pieces[1:-1] if p.length]

    def matches(self, value: str) -> bool:
        """Whether the whole value matches."""
        s = value.lower()
        first = self.first
        if not self.star:
            return len(s) == first.length and first.at(s, 0)
        last = self.last
        tail = len(s) - last.length
        if tail < first.length or not first.at(s, 0):
            return False
        pos = first.length
        for piece in self.middle:
            found = piece.find(s, pos, tail)
            if found < 0:
                return False
            pos = found + piece.length
        return last.at(s, tail)

    def search_words(self, value: str) -> bool:
        """Whether a substring starting and ending at word boundaries matches (the
        spec's rule for `content.body`)."""
        s = value.lower()
        n = len(s)
        first = self.first
        if not self.star:
            pos = 0
            while pos <= n and (i := first.find(s, pos, n)) >= 0:
                j = i + first.length
                if (i == 0 or s[i - 1] not in _WORD_CHARS) and (j == n or s[j] not in _WORD_CHARS):
                    return True
                pos = i + 1
            return False
        # The leftmost start at a boundary is the best one: every later start places
        # the following pieces no earlier.
        pos = 0
        while True:
            i = first.find(s, pos, n)
            if i < 0:
                return False
            if i == 0 or s[i - 1] not in _WORD_CHARS:
                break
            pos = i + 1
        pos = i + first.length
        for piece in self.middle:
            found = piece.find(s, pos, n)
            if found < 0:
                return False
            pos = found + piece.length
        last = self.last
        while pos <= n and (found := last.find(s, pos, n)) >= 0:
            j = found + last.length
            if j == n or s[j] not in _WORD_CHARS:
                return True
            pos = found + 1
        return False


@lru_cache(maxsize=20_000)
def glob(pattern: str) -> Glob:
    return Glob(pattern)


@lru_cache(maxsize=20_000)
def _display_name_regex(name: str) -> re.Pattern[str]:
    return re.compile(_WORD_BEFORE + re.escape(name) + _WORD_AFTER, re.IGNORECASE)


# --- the event ----------------------------------------------------------------------


class PushEvent:
    """One event, prepared once and then evaluated for many users."""

    __slots__ = ("event", "flat", "member_count", "memo", "notification_levels", "plans", "sender", "sender_power_level")

    def __init__(
        self,
        event: Mapping[str, Any],
        *,
        member_count: int,
        sender_power_level: int,
        notification_levels: Mapping[str, int],
    ) -> None:
        self.event = event
        self.flat = _flatten(event)
        self.member_count = member_count
        sender = event.get("sender")
        self.sender = sender if isinstance(sender, str) else None
        self.sender_power_level = sender_power_level
        self.notification_levels = notification_levels
        # Condition group serial -> whether its user-independent conditions hold.
        self.memo: dict[int, bool] = {}
        # Segment serial -> what is left to decide per user (see `_plan`).
        self.plans: dict[int, _Plan] = {}

    def string(self, key: str) -> str | None:
        value = self.flat.get(key)
        return value if isinstance(value, str) else None


# --- conditions ---------------------------------------------------------------------

# A compiled condition. Static ones look at the event only; user ones also get the
# user's ID and display name.
StaticCheck = Callable[[PushEvent], bool]
UserCheck = Callable[[PushEvent, str, "str | None"], bool]


def _never(_event: PushEvent) -> bool:
    return False


def _is_scalar(value: Any) -> bool:
    # Non-compound canonical JSON values: no floats (and bool is not an integer here).
    return value is None or isinstance(value, (str, bool)) or (isinstance(value, int) and -(2**53) < value < 2**53)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def event_match(key: str, pattern: str) -> StaticCheck:
    key = canonical_key(key)
    compiled = glob(pattern)
    if key == "content.body":
        return lambda ev: (v := ev.string(key)) is not None and compiled.search_words(v)
    if "*" not in pattern and "?" not in pattern:
        # The common case (`type`, `content.msgtype`, ...): a plain comparison.
        lowered = pattern.lower()
        return lambda ev: (v := ev.string(key)) is not None and v.lower() == lowered
    return lambda ev: (v := ev.string(key)) is not None and compiled.matches(v)


def event_property_is(key: str, value: Any) -> StaticCheck:
    if not _is_scalar(value):
        return _never
    key = canonical_key(key)
    return lambda ev: key in ev.flat and _same(ev.flat[key], value)


def event_property_contains(key: str, value: Any) -> StaticCheck:
    if not _is_scalar(value):
        return _never
    key = canonical_key(key)

    def check(ev: PushEvent) -> bool:
        array = ev.flat.get(key)
        return isinstance(array, list) and any(_same(item, value) for item in array)

    return check


_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def room_member_count(is_: Any) -> StaticCheck:
    parsed = _MEMBER_COUNT.fullmatch(is_) if isinstance(is_, str) else None
    if parsed is None:
        return _never
    compare = _COMPARE[parsed.group(1) or "=="]
    number = int(parsed.group(2))
    return lambda ev: compare(ev.member_count, number)


def sender_notification_permission(key: Any) -> StaticCheck:
    if not isinstance(key, str):
        return _never

    def check(ev: PushEvent) -> bool:
        required = ev.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
        if not isinstance(required, int) or isinstance(required, bool):
            required = DEFAULT_NOTIFICATION_LEVEL
        return ev.sender_power_level >= required

    return check


def contains_display_name(ev: PushEvent, _user_id: str, display_name: str | None) -> bool:
    if not display_name:
        return False
    body = ev.string("content.body")
    return body is not None and _display_name_regex(display_name).search(body) is not None


def key_equals(key: str, value: str) -> StaticCheck:
    """Exact equality, for the implied condition of room and sender rules (their rule
    ID is the room or user ID)."""
    key = canonical_key(key)
    return lambda ev: ev.flat.get(key) == value


def key_is_user(key: str) -> UserCheck:
    """The default rules' "[the user's Matrix ID]" in an event_match pattern."""
    key = canonical_key(key)
    return lambda ev, user_id, _name: (v := ev.string(key)) is not None and v.lower() == user_id.lower()


def key_contains_user(key: str) -> UserCheck:
    """The default rules' "[the user's Matrix ID]" as an event_property_contains value."""
    key = canonical_key(key)

    def check(ev: PushEvent, user_id: str, _name: str | None) -> bool:
        array = ev.flat.get(key)
        return isinstance(array, list) and user_id in array

    return check


def compile_condition(condition: Any) -> StaticCheck | None:
    """A static check for a condition as a client gives it, or None for
    `contains_display_name` (the one user-dependent kind a client can use). Malformed
    or unknown conditions never match (spec: unrecognised conditions MUST NOT match)."""
    if not isinstance(condition, Mapping):
        return _never
    kind = condition.get("kind")
    key = condition.get("key")
    if kind == "event_match":
        pattern = condition.get("pattern")
        if isinstance(key, str) and isinstance(pattern, str):
            return event_match(key, pattern)
    elif kind == "event_property_is":
        if isinstance(key, str) and "value" in condition:
            return event_property_is(key, condition["value"])
    elif kind == "event_property_contains":
        if isinstance(key, str) and "value" in condition:
            return event_property_contains(key, condition["value"])
    elif kind == "room_member_count":
        return room_member_count(condition.get("is"))
    elif kind == "sender_notification_permission":
        return sender_notification_permission(key)
    elif kind == "contains_display_name":
        return None
    return _never


# --- rules and rule sets ------------------------------------------------------------


class Conditions(msgspec.Struct, frozen=True):
    """A rule's conditions, compiled. `serial` keys the per-event memo of the static
    part, so rules sharing a Conditions (the defaults, in every user's rule set) share
    the work too."""

    static: tuple[StaticCheck, ...]
    user: tuple[UserCheck, ...] = ()
    serial: int = msgspec.field(default_factory=lambda: next(_serials))

    @classmethod
    def from_client(cls, conditions: Iterable[Any]) -> Conditions:
        static: list[StaticCheck] = []
        user: list[UserCheck] = []
        for condition in conditions:
            check = compile_condition(condition)
            if check is None:
                user.append(contains_display_name)
            else:
                static.append(check)
        return cls(tuple(static), tuple(user))


class Rule(msgspec.Struct, frozen=True):
    rule_id: str
    conditions: Conditions
    # Never mutated; shared by every user the rule set is shared by.
    actions: list[Any]


def clean_actions(actions: Sequence[Any]) -> list[Any]:
    return [a for a in actions if not (isinstance(a, str) and a in _IGNORED_ACTIONS)]


class Segment:
    """A run of consecutive rules of a rule set. The server-default runs are shared by
    every user who did not change them, so their per-event plan (see `_plan`) is worked
    out once per event rather than once per user."""

    __slots__ = ("rules", "serial")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.serial = next(_serials)


class RuleSet:
    """A user's enabled rules in evaluation order (override, content, room, sender,
    underride), compiled, as segments."""

    __slots__ = ("segments",)

    def __init__(self, segments: Iterable[Segment]) -> None:
        self.segments: tuple[Segment, ...] = tuple(s for s in segments if s.rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(rule for segment in self.segments for rule in segment.rules)

    def __len__(self) -> int:
        return sum(len(s.rules) for s in self.segments)


# What is left to decide per user, for one event and one segment: the rules whose
# user-independent conditions hold, up to the first that has no per-user conditions.
_Plan = tuple[tuple[tuple[UserCheck, ...], list[Any]], ...]


def _plan(segment: Segment, event: PushEvent) -> _Plan:
    memo = event.memo
    plan: list[tuple[tuple[UserCheck, ...], list[Any]]] = []
    for rule in segment.rules:
        conditions = rule.conditions
        static_ok = memo.get(conditions.serial)
        if static_ok is None:
            static_ok = True
            for check in conditions.static:
                if not check(event):
                    static_ok = False
                    break
            memo[conditions.serial] = static_ok
        if static_ok:
            plan.append((conditions.user, rule.actions))
            if not conditions.user:
                break
    return tuple(plan)


def actions_for(rules: RuleSet, event: PushEvent, user_id: str, display_name: str | None) -> list[Any]:
    """The actions of the first matching rule; [] when none matches, when that rule has
    no actions, or for the user's own events (spec: never notify for those).

    The returned list is shared: do not mutate it."""
    if event.sender == user_id:
        return []
    plans = event.plans
    for segment in rules.segments:
        plan = plans.get(segment.serial)
        if plan is None:
            plan = plans[segment.serial] = _plan(segment, event)
        # Plain loops: this runs for every member of the room.
        for user_checks, actions in plan:
            for check in user_checks:
                if not check(event, user_id, display_name):
                    break
            else:
                return actions
    return []


def should_notify(actions: Sequence[Any]) -> bool:
    return "notify" in actions


def is_highlight(actions: Sequence[Any]) -> bool:
    """A `highlight` tweak with a true value (no value means true)."""
    for action in actions:
        if isinstance(action, Mapping) and action.get("set_tweak") == "highlight":
            return action.get("value", True) is True
    return False


def tweaks(actions: Sequence[Any]) -> dict[str, Any]:
    """The tweaks the actions set, as the push gateway's `tweaks` object."""
    out: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            out[action["set_tweak"]] = action.get("value", True if action["set_tweak"] == "highlight" else None)
    return {k: v for k, v in out.items() if v is not None}
