"""The server-default push rules, and a user's full rule set (spec: Client-Server API,
"Push Notifications" / "Predefined Rules", as of v1.19).

Pure. Since spec v1.17 the legacy mention rules that looked into `content.body`
(`.m.rule.contains_display_name`, `.m.rule.roomnotif`, `.m.rule.contains_user_name`)
are no longer server-default rules; mentions go by `m.mentions`. The
`contains_display_name` condition still works in users' own rules.

The defaults are templates: "[the user's Matrix ID]" is the user's ID, filled in when
a rule set is shown to a client; evaluation compiles them once, for every user, into
conditions that take the user ID at evaluation time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from homeserver.push.evaluator import (
    Conditions,
    Rule,
    RuleSet,
    Segment,
    StaticCheck,
    UserCheck,
    clean_actions,
    compile_condition,
    event_match,
    key_contains_user,
    key_equals,
    key_is_user,
)
from storage.push_rules import KINDS, StoredPushRule, UserPushRules

USER_ID = "[the user's Matrix ID]"
MASTER = ".m.rule.master"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}


# In the spec's order. `.m.rule.master` always comes first, before the user's own
# override rules; the other defaults come after the user's rules of their kind.
DEFAULT_OVERRIDE: tuple[dict[str, Any], ...] = (
    _rule(MASTER, [], [], enabled=False),
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(
        ".m.rule.invite_for_me",
        [_match("type", "m.room.member"), _match("content.membership", "invite"), _match("state_key", USER_ID)],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(
        ".m.rule.is_user_mention",
        [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": USER_ID}],
        ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.tombstone",
        [_match("type", "m.room.tombstone"), _match("state_key", "")],
        ["notify", _HIGHLIGHT],
    ),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
    _rule(
        ".m.rule.suppress_edits",
        [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
        [],
    ),
)

DEFAULT_CONTENT: tuple[dict[str, Any], ...] = ()

DEFAULT_UNDERRIDE: tuple[dict[str, Any], ...] = (
    _rule(".m.rule.call", [_match("type", "m.call.invite")], ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(
        ".m.rule.encrypted_room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(
        ".m.rule.room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
)

DEFAULTS: dict[str, tuple[dict[str, Any], ...]] = {
    "override": DEFAULT_OVERRIDE,
    "content": DEFAULT_CONTENT,
    "room": (),
    "sender": (),
    "underride": DEFAULT_UNDERRIDE,
}
_DEFAULT_KIND = {rule["rule_id"]: kind for kind, rules in DEFAULTS.items() for rule in rules}


def default_rule(kind: str, rule_id: str) -> dict[str, Any] | None:
    """The template of a server-default rule of this kind, if there is one."""
    if _DEFAULT_KIND.get(rule_id) != kind:
        return None
    return next(r for r in DEFAULTS[kind] if r["rule_id"] == rule_id)


# --- the client's view -----------------------------------------------------------------


def _fill_user(value: Any, user_id: str) -> Any:
    if value == USER_ID:
        return user_id
    if isinstance(value, dict):
        return {k: _fill_user(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_user(v, user_id) for v in value]
    return value


def _client_default(template: dict[str, Any], user_id: str, rules: UserPushRules) -> dict[str, Any]:
    rule = _fill_user(template, user_id)
    setting = rules.defaults.get(template["rule_id"])
    if setting is not None:
        if setting.enabled is not None:
            rule["enabled"] = setting.enabled
        if setting.actions is not None:
            rule["actions"] = copy.deepcopy(setting.actions)
    return rule


def _client_custom(rule: StoredPushRule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rule_id": rule.rule_id,
        "default": False,
        "enabled": rule.enabled,
        "actions": copy.deepcopy(rule.actions),
    }
    if rule.kind in ("override", "underride"):
        out["conditions"] = copy.deepcopy(rule.conditions or [])
    elif rule.kind == "content":
        out["pattern"] = rule.pattern or ""
    return out


def client_ruleset(user_id: str, rules: UserPushRules) -> dict[str, list[dict[str, Any]]]:
    """The `global` ruleset as GET /pushrules/global/ and m.push_rules show it: each
    kind in evaluation order (the master rule first, then the user's rules, then the
    other server-default rules of the kind)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        defaults = [_client_default(t, user_id, rules) for t in DEFAULTS[kind]]
        own = [_client_custom(r) for r in rules.custom.get(kind, ())]
        if kind == "override" and defaults and defaults[0]["rule_id"] == MASTER:
            out[kind] = [defaults[0], *own, *defaults[1:]]
        else:
            out[kind] = [*own, *defaults]
    return out


def find_rule(user_id: str, rules: UserPushRules, kind: str, rule_id: str) -> dict[str, Any] | None:
    """One rule as the client sees it, or None."""
    template = default_rule(kind, rule_id)
    if template is not None:
        return _client_default(template, user_id, rules)
    stored = rules.rule(kind, rule_id)
    return _client_custom(stored) if stored is not None else None


# --- compilation -------------------------------------------------------------------


def _compile_template(template: dict[str, Any]) -> Conditions:
    static: list[StaticCheck] = []
    user: list[UserCheck] = []
    for condition in template["conditions"]:
        if condition.get("pattern") == USER_ID:
            user.append(key_is_user(condition["key"]))
        elif condition.get("value") == USER_ID:
            user.append(key_contains_user(condition["key"]))
        else:
            check = compile_condition(condition)
            assert check is not None, "no default rule uses contains_display_name"
            static.append(check)
    return Conditions(tuple(static), tuple(user))


# Compiled once: every user's rule set shares these (and their per-event memo).
_DEFAULT_CONDITIONS: dict[str, Conditions] = {
    t["rule_id"]: _compile_template(t) for rules in DEFAULTS.values() for t in rules
}
_DEFAULT_RULES: dict[str, Rule] = {
    t["rule_id"]: Rule(t["rule_id"], _DEFAULT_CONDITIONS[t["rule_id"]], clean_actions(t["actions"]))
    for rules in DEFAULTS.values()
    for t in rules
}


def _custom_conditions(rule: StoredPushRule) -> Conditions:
    if rule.kind == "room":
        return Conditions((key_equals("room_id", rule.rule_id),))
    if rule.kind == "sender":
        return Conditions((key_equals("sender", rule.rule_id),))
    if rule.kind == "content":
        return Conditions((event_match("content.body", rule.pattern or ""),))
    return Conditions.from_client(rule.conditions or [])


def _compiled_default(template: Mapping[str, Any], rules: UserPushRules) -> Rule | None:
    rule_id = template["rule_id"]
    setting = rules.defaults.get(rule_id)
    enabled = template["enabled"]
    if setting is not None and setting.enabled is not None:
        enabled = setting.enabled
    if not enabled:
        return None
    if setting is not None and setting.actions is not None:
        return Rule(rule_id, _DEFAULT_CONDITIONS[rule_id], clean_actions(setting.actions))
    return _DEFAULT_RULES[rule_id]


def _default_segments(kind: str, rules: UserPushRules) -> list[Segment]:
    """The default rules of a kind: the shared segments, unless the user changed one."""
    templates = DEFAULTS[kind]
    if not any(t["rule_id"] in rules.defaults for t in templates):
        return list(_SHARED_SEGMENTS[kind])
    compiled = [r for t in templates if (r := _compiled_default(t, rules)) is not None]
    if kind == "override":
        return [Segment(r for r in compiled if r.rule_id == MASTER), Segment(r for r in compiled if r.rule_id != MASTER)]
    return [Segment(compiled)]


def compile_rules(rules: UserPushRules) -> RuleSet:
    """The enabled rules in evaluation order, ready for `actions_for`."""
    if rules.empty:
        return DEFAULT_RULESET
    segments: list[Segment] = []
    for kind in KINDS:
        defaults = _default_segments(kind, rules)
        own = Segment(
            Rule(r.rule_id, _custom_conditions(r), clean_actions(r.actions))
            for r in rules.custom.get(kind, ())
            if r.enabled
        )
        if kind == "override":
            # The master rule comes before the user's own override rules.
            segments += [defaults[0], own, *defaults[1:]]
        else:
            segments += [own, *defaults]
    return RuleSet(segments)


_NO_SETTINGS = UserPushRules()
_SHARED_SEGMENTS: dict[str, list[Segment]] = {
    "override": [
        Segment(r for t in DEFAULT_OVERRIDE[:1] if (r := _compiled_default(t, _NO_SETTINGS)) is not None),
        Segment(r for t in DEFAULT_OVERRIDE[1:] if (r := _compiled_default(t, _NO_SETTINGS)) is not None),
    ],
    **{
        kind: [Segment(r for t in DEFAULTS[kind] if (r := _compiled_default(t, _NO_SETTINGS)) is not None)]
        for kind in ("content", "room", "sender", "underride")
    },
}
DEFAULT_RULESET = RuleSet(segment for kind in KINDS for segment in _SHARED_SEGMENTS[kind])
