"""The push rule evaluator and the default rule set, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.push.evaluator import (
    PushEvent,
    RuleSet,
    actions_for,
    canonical_key,
    glob,
    is_highlight,
    should_notify,
    split_key,
    tweaks,
)
from homeserver.push.rules import DEFAULT_RULESET, client_ruleset, compile_rules
from storage.push_rules import DefaultRuleSetting, StoredPushRule, UserPushRules
from tests.push.default_rules import SPEC_OVERRIDE_ORDER, SPEC_UNDERRIDE_ORDER

ME = "@alice:example.org"
OTHER = "@bob:example.org"
ROOM = "!room:example.org"


def message(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": OTHER,
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def push_event(
    event: dict[str, Any], members: int = 10, power: int = 0, levels: dict[str, int] | None = None
) -> PushEvent:
    return PushEvent(event, member_count=members, sender_power_level=power, notification_levels=levels or {})


def rules_with(*custom: StoredPushRule, defaults: dict[str, DefaultRuleSetting] | None = None) -> RuleSet:
    by_kind: dict[str, tuple[StoredPushRule, ...]] = {}
    for rule in custom:
        by_kind[rule.kind] = (*by_kind.get(rule.kind, ()), rule)
    return compile_rules(UserPushRules(by_kind, defaults or {}))


def override(rule_id: str, conditions: list[Any], actions: list[Any] | None = None) -> StoredPushRule:
    return StoredPushRule("override", rule_id, actions if actions is not None else ["notify"], True, conditions=conditions)


def matches(condition: dict[str, Any], event: dict[str, Any], *, display_name: str | None = None, **kw: Any) -> bool:
    rules = rules_with(override("x", [condition], ["notify", {"set_tweak": "x"}]))
    return {"set_tweak": "x"} in actions_for(rules, push_event(event, **kw), ME, display_name)


# --- the default rules -----------------------------------------------------------------

def test_default_rules_in_spec_order() -> None:
    ruleset = client_ruleset(ME, UserPushRules())
    assert [r["rule_id"] for r in ruleset["override"]] == SPEC_OVERRIDE_ORDER
    assert [r["rule_id"] for r in ruleset["underride"]] == SPEC_UNDERRIDE_ORDER
    assert ruleset["content"] == ruleset["room"] == ruleset["sender"] == []
    master = ruleset["override"][0]
    assert master == {"rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [], "actions": []}
    invite = ruleset["override"][2]
    assert invite["conditions"][2] == {"kind": "event_match", "key": "state_key", "pattern": ME}
    mention = ruleset["override"][4]
    assert mention["conditions"] == [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": ME}]


def test_default_actions_for_common_events() -> None:
    dm = push_event(message(), members=2)
    assert actions_for(DEFAULT_RULESET, dm, ME, None) == ["notify", {"set_tweak": "sound", "value": "default"}]
    group = push_event(message(), members=3)
    assert actions_for(DEFAULT_RULESET, group, ME, None) == ["notify"]
    notice = push_event(message(msgtype="m.notice"), members=2)
    assert actions_for(DEFAULT_RULESET, notice, ME, None) == []
    encrypted = {"type": "m.room.encrypted", "room_id": ROOM, "sender": OTHER, "content": {"ciphertext": "x"}}
    assert actions_for(DEFAULT_RULESET, push_event(encrypted, members=2), ME, None) == [
        "notify",
        {"set_tweak": "sound", "value": "default"},
    ]
    assert actions_for(DEFAULT_RULESET, push_event(encrypted, members=5), ME, None) == ["notify"]
    reaction = {"type": "m.reaction", "room_id": ROOM, "sender": OTHER, "content": {}}
    assert actions_for(DEFAULT_RULESET, push_event(reaction), ME, None) == []
    call = {"type": "m.call.invite", "room_id": ROOM, "sender": OTHER, "content": {}}
    assert actions_for(DEFAULT_RULESET, push_event(call), ME, None) == ["notify", {"set_tweak": "sound", "value": "ring"}]
    topic = {"type": "m.room.topic", "room_id": ROOM, "sender": OTHER, "state_key": "", "content": {"topic": "t"}}
    assert actions_for(DEFAULT_RULESET, push_event(topic), ME, None) == []


def test_own_events_never_notify() -> None:
    event = push_event(message(), members=2)
    assert actions_for(DEFAULT_RULESET, event, OTHER, None) == []


def test_invite_for_me_only_for_the_invitee() -> None:
    invite = {
        "type": "m.room.member",
        "room_id": ROOM,
        "sender": OTHER,
        "state_key": ME,
        "content": {"membership": "invite"},
    }
    event = push_event(invite)
    assert actions_for(DEFAULT_RULESET, event, ME, None) == ["notify", {"set_tweak": "sound", "value": "default"}]
    # Anyone else in the room: the member event rule, no notification.
    assert actions_for(DEFAULT_RULESET, event, "@carol:example.org", None) == []


def test_user_mention_highlights_only_the_mentioned_user() -> None:
    event = push_event(message("hi", **{"m.mentions": {"user_ids": [ME]}}), members=50)
    mine = actions_for(DEFAULT_RULESET, event, ME, None)
    assert should_notify(mine) and is_highlight(mine)
    theirs = actions_for(DEFAULT_RULESET, event, "@carol:example.org", None)
    assert theirs == ["notify"] and not is_highlight(theirs)


def test_room_mention_needs_the_notification_power_level() -> None:
    event = message("everyone!", **{"m.mentions": {"room": True}})
    low = actions_for(DEFAULT_RULESET, push_event(event, power=0), ME, None)
    assert not is_highlight(low)
    high = actions_for(DEFAULT_RULESET, push_event(event, power=50), ME, None)
    assert is_highlight(high)
    custom_level = actions_for(DEFAULT_RULESET, push_event(event, power=10, levels={"room": 10}), ME, None)
    assert is_highlight(custom_level)


def test_edits_and_tombstones() -> None:
    edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
    assert actions_for(DEFAULT_RULESET, push_event(edit, members=2), ME, None) == []
    tombstone = {"type": "m.room.tombstone", "room_id": ROOM, "sender": OTHER, "state_key": "", "content": {}}
    assert is_highlight(actions_for(DEFAULT_RULESET, push_event(tombstone), ME, None))
    not_state = {"type": "m.room.tombstone", "room_id": ROOM, "sender": OTHER, "content": {}}
    assert actions_for(DEFAULT_RULESET, push_event(not_state), ME, None) == []


def test_legacy_body_mentions_are_not_default_rules_any_more() -> None:
    # Spec v1.17 removed .m.rule.contains_display_name / roomnotif / contains_user_name.
    event = push_event(message("alice: @room look"), members=50, power=100)
    assert actions_for(DEFAULT_RULESET, event, ME, "alice") == ["notify"]


# --- user rules and settings of defaults -----------------------------------------------


def test_master_rule_enabled_mutes_everything() -> None:
    rules = rules_with(defaults={".m.rule.master": DefaultRuleSetting(enabled=True)})
    event = push_event(message("hi", **{"m.mentions": {"user_ids": [ME]}}), members=2)
    assert actions_for(rules, event, ME, None) == []


def test_muted_room_by_room_rule() -> None:
    for actions in ([], ["dont_notify"]):
        rules = rules_with(StoredPushRule("room", ROOM, actions, True))
        assert actions_for(rules, push_event(message(), members=2), ME, None) == []
        elsewhere = {**message(), "room_id": "!other:example.org"}
        assert actions_for(rules, push_event(elsewhere, members=2), ME, None) != []
    # A disabled room rule does not apply.
    rules = rules_with(StoredPushRule("room", ROOM, [], False))
    assert actions_for(rules, push_event(message(), members=2), ME, None) != []


def test_sender_rule_and_kind_order() -> None:
    # override beats content beats room beats sender beats underride.
    sender = StoredPushRule("sender", OTHER, ["notify", {"set_tweak": "sound", "value": "sender"}], True)
    room = StoredPushRule("room", ROOM, ["notify", {"set_tweak": "sound", "value": "room"}], True)
    content = StoredPushRule("content", "c", ["notify", {"set_tweak": "sound", "value": "content"}], True, pattern="cake")
    event = push_event(message("cake time"))
    assert tweaks(actions_for(rules_with(sender), event, ME, None)) == {"sound": "sender"}
    assert tweaks(actions_for(rules_with(sender, room), event, ME, None)) == {"sound": "room"}
    assert tweaks(actions_for(rules_with(sender, room, content), event, ME, None)) == {"sound": "content"}
    own_override = override("o", [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], [])
    assert actions_for(rules_with(sender, room, content, own_override), event, ME, None) == []


def test_default_actions_changed() -> None:
    rules = rules_with(defaults={".m.rule.message": DefaultRuleSetting(actions=["notify", {"set_tweak": "highlight"}])})
    assert is_highlight(actions_for(rules, push_event(message()), ME, None))
    disabled = rules_with(defaults={".m.rule.message": DefaultRuleSetting(enabled=False)})
    assert actions_for(disabled, push_event(message()), ME, None) == []


# --- conditions ------------------------------------------------------------------------


def test_event_match_is_a_case_insensitive_glob_on_the_whole_value() -> None:
    topic = {"type": "m.room.topic", "room_id": ROOM, "sender": OTHER, "state_key": "", "content": {"topic": "Lunch plans"}}
    condition = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}
    assert matches(condition, topic)
    for value in ("LUNCH", "lunch"):
        assert matches(condition, {**topic, "content": {"topic": value}})
    for value in (" lunch", "lunc", None, 5, ["lunch"]):
        assert not matches(condition, {**topic, "content": {"topic": value}})
    assert not matches(condition, {**topic, "content": {}})
    # Even "*" needs a string.
    assert not matches({"kind": "event_match", "key": "content.topic", "pattern": "*"}, {**topic, "content": {}})
    # Regex characters in a pattern are literal.
    assert matches({"kind": "event_match", "key": "content.topic", "pattern": "a.b+c"}, {**topic, "content": {"topic": "a.b+c"}})
    assert not matches({"kind": "event_match", "key": "content.topic", "pattern": "a.b"}, {**topic, "content": {"topic": "axb"}})


def test_body_matches_words() -> None:
    condition = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}
    for body in ("An example event.", "exple", "An exciting triple-whammy", "EXAMPLE"):
        assert matches(condition, message(body)), body
    for body in ("counterexample", "examples", "example_1"):
        assert not matches(condition, message(body)), body
    assert matches({"kind": "event_match", "key": "content.body", "pattern": "cake"}, message("cake!"))
    assert not matches({"kind": "event_match", "key": "content.body", "pattern": "cake"}, message("cakes"))
    assert not matches({"kind": "event_match", "key": "content.body", "pattern": "cake"}, message("pancake"))
    assert glob("?").search_words("a b") and not glob("?").search_words("ab")
    assert glob("*").search_words("") and glob("").search_words("") and glob("").search_words("a  b")
    assert not glob("").search_words("a b")


@pytest.mark.parametrize(
    ("pattern", "value", "whole", "words"),
    [
        ("cake*lie", "cake is a lie", True, True),
        ("cake*lie", "the cake is a lie!", False, True),
        ("cake*lie", "cakelie", True, True),
        ("cake*lie", "cake is a lie2", False, False),
        ("cake*lie", "pancake is a lie", False, False),
        ("*", "", True, True),
        ("**", "anything", True, True),
        ("a?c", "abc", True, True),
        ("a?c", "ac", False, False),
        ("a?c", "x a-c y", False, True),
        ("*a*b*", "xxaxxbxx", True, True),
        ("*a*b", "xxaxxbxx", False, False),
        ("a*a", "a", False, False),
        ("a*a", "aa", True, True),
        ("ab*ba", "aba", False, False),
        ("ex*ple", "An exciting triple-whammy", False, True),
        ("@room", "hey @room!", False, True),
        ("Hello", "hELLO", True, True),
    ],
)
def test_glob_semantics(pattern: str, value: str, whole: bool, words: bool) -> None:
    assert glob(pattern).matches(value) is whole
    assert glob(pattern).search_words(value) is words


def test_hostile_globs_take_linear_time() -> None:
    # With a backtracking regex this pattern takes minutes on 200 characters.
    import time

    body = "a" * 65_000
    started = time.perf_counter()
    for pattern in ("*a*a*a*a*a*a*a*a*b", "a*a*a*a*a*a*a*a*b", "?*?*?*?*?*b"):
        assert not glob(pattern).search_words(body)
        assert not glob(pattern).matches(body)
    assert time.perf_counter() - started < 5


def test_dotted_keys_and_escaping() -> None:
    assert split_key("content.m\\.relates_to.rel_type") == ["content", "m.relates_to", "rel_type"]
    assert split_key("content.m\\\\foo") == ["content", "m\\foo"]
    assert split_key("content.m\\xfoo") == ["content", "m\\xfoo"]
    assert canonical_key("content.m\\xfoo") == "content.m\\\\xfoo"
    event = message("x", **{"m.federate": True, "m\\foo": "bar", "a": {"b.c": {"d": "deep"}}})
    assert matches({"kind": "event_property_is", "key": "content.m\\.federate", "value": True}, event)
    assert not matches({"kind": "event_property_is", "key": "content.m.federate", "value": True}, event)
    assert matches({"kind": "event_match", "key": "content.m\\\\foo", "pattern": "bar"}, event)
    assert matches({"kind": "event_match", "key": "content.a.b\\.c.d", "pattern": "deep"}, event)
    assert not matches({"kind": "event_match", "key": "content.a.b.c.d", "pattern": "deep"}, event)


def test_event_property_is_is_exact_and_typed() -> None:
    event = message("x", flag=True, count=1, name="One", nothing=None)
    assert matches({"kind": "event_property_is", "key": "content.flag", "value": True}, event)
    assert not matches({"kind": "event_property_is", "key": "content.flag", "value": "true"}, event)
    assert not matches({"kind": "event_property_is", "key": "content.flag", "value": 1}, event)
    assert not matches({"kind": "event_property_is", "key": "content.count", "value": True}, event)
    assert matches({"kind": "event_property_is", "key": "content.count", "value": 1}, event)
    assert not matches({"kind": "event_property_is", "key": "content.name", "value": "one"}, event)
    assert matches({"kind": "event_property_is", "key": "content.nothing", "value": None}, event)
    assert not matches({"kind": "event_property_is", "key": "content.absent", "value": None}, event)
    assert not matches({"kind": "event_property_is", "key": "content.flag", "value": [True]}, event)


def test_event_property_contains() -> None:
    event = message("x", alt_aliases=["#somewhere:example.org", "#myroom:example.com", 3, True])
    key = "content.alt_aliases"
    assert matches({"kind": "event_property_contains", "key": key, "value": "#myroom:example.com"}, event)
    assert not matches({"kind": "event_property_contains", "key": key, "value": ":example.com"}, event)
    assert matches({"kind": "event_property_contains", "key": key, "value": 3}, event)
    assert not matches({"kind": "event_property_contains", "key": key, "value": 1}, event)  # True is not 1
    assert not matches({"kind": "event_property_contains", "key": "content.body", "value": "x"}, event)


def test_contains_display_name_on_word_boundaries() -> None:
    condition = {"kind": "contains_display_name"}
    assert matches(condition, message("Hey Alice Smith, look"), display_name="alice smith")
    assert matches(condition, message("alice smith"), display_name="Alice Smith")
    assert not matches(condition, message("Hey AliceSmithers"), display_name="Alice Smith")
    assert not matches(condition, message("malice smith"), display_name="Alice Smith")
    assert not matches(condition, message("Alice Smith"), display_name=None)
    assert not matches(condition, message("Alice Smith"), display_name="")
    # Regex characters in a name are literal.
    assert matches(condition, message("thanks (bob)"), display_name="(bob)")
    assert not matches(condition, message("thanks bob"), display_name="b.b")


@pytest.mark.parametrize(
    ("is_", "count", "expected"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<10", 9, True),
        ("<10", 10, False),
        ("<=10", 10, True),
        (">10", 10, False),
        (">10", 11, True),
        (">=10", 10, True),
        ("=>10", 10, False),
        ("ten", 10, False),
        ("", 0, False),
        (">=-1", 0, False),
    ],
)
def test_room_member_count(is_: str, count: int, expected: bool) -> None:
    assert matches({"kind": "room_member_count", "is": is_}, message(), members=count) is expected


def test_sender_notification_permission() -> None:
    condition = {"kind": "sender_notification_permission", "key": "room"}
    assert not matches(condition, message(), power=49)
    assert matches(condition, message(), power=50)
    assert matches(condition, message(), power=0, levels={"room": 0})
    assert not matches(condition, message(), power=99, levels={"room": 100})
    assert not matches({"kind": "sender_notification_permission"}, message(), power=100)


def test_unknown_or_malformed_conditions_never_match() -> None:
    for condition in (
        {"kind": "org.example.unknown"},
        {"kind": "event_match", "key": "type"},
        {"kind": "event_match", "pattern": "m.room.message"},
        {"kind": "room_member_count"},
        {"kind": "event_property_is", "key": "content.body"},
    ):
        assert not matches(condition, message()), condition
    # An override rule without conditions matches everything.
    rules = rules_with(override("all", [], ["notify", {"set_tweak": "x"}]))
    assert actions_for(rules, push_event(message()), ME, None) == ["notify", {"set_tweak": "x"}]


def test_actions_helpers() -> None:
    assert should_notify(["notify"]) and not should_notify([]) and not should_notify(["dont_notify"])
    assert is_highlight([{"set_tweak": "highlight"}])
    assert is_highlight(["notify", {"set_tweak": "highlight", "value": True}])
    assert not is_highlight([{"set_tweak": "highlight", "value": False}])
    assert not is_highlight(["notify", {"set_tweak": "sound", "value": "default"}])
    assert tweaks(["notify", {"set_tweak": "sound", "value": "ring"}, {"set_tweak": "highlight"}]) == {
        "sound": "ring",
        "highlight": True,
    }


def test_one_push_event_serves_many_users_with_different_rules() -> None:
    # The memo of the shared default conditions must not leak one user's outcome.
    event = push_event(message("cake", **{"m.mentions": {"user_ids": [ME]}}), members=3)
    cake = rules_with(StoredPushRule("content", "c", ["notify", {"set_tweak": "sound", "value": "cake"}], True, pattern="cake"))
    users = [(DEFAULT_RULESET, ME), (cake, "@carol:example.org"), (DEFAULT_RULESET, "@dan:example.org"), (cake, ME)]
    results = [actions_for(rules, event, user, None) for rules, user in users]
    assert is_highlight(results[0])
    assert tweaks(results[1]) == {"sound": "cake"}
    assert results[2] == ["notify"]
    # The user's mention override comes before their content rule.
    assert is_highlight(results[3])
    # A user who changed a default rule gets their own copy of that part only.
    muted = rules_with(defaults={".m.rule.master": DefaultRuleSetting(enabled=True)})
    quiet = rules_with(defaults={".m.rule.is_user_mention": DefaultRuleSetting(actions=["notify"])})
    assert actions_for(muted, event, ME, None) == []
    assert actions_for(quiet, event, ME, None) == ["notify"]
    assert is_highlight(actions_for(DEFAULT_RULESET, event, ME, None))
    assert len(DEFAULT_RULESET) == 14  # the disabled master rule is left out


def test_glob_agrees_with_a_reference_regex_on_short_strings() -> None:
    # The backtracking regex is the obvious reading of the spec; on short strings it
    # is fast enough to check the linear matcher against.
    import random
    import re

    def reference(pattern: str, words: bool) -> re.Pattern[str]:
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        if words:
            return re.compile(r"(?<![A-Za-z0-9_])" + body + r"(?![A-Za-z0-9_])", re.IGNORECASE | re.DOTALL)
        return re.compile(body + r"\Z", re.IGNORECASE | re.DOTALL)

    rng = random.Random(7)
    for _ in range(2000):
        pattern = "".join(rng.choice("aB-*?") for _ in range(rng.randint(0, 6)))
        value = "".join(rng.choice("abA- _") for _ in range(rng.randint(0, 9)))
        assert glob(pattern).matches(value) is (reference(pattern, False).match(value) is not None), (pattern, value)
        assert glob(pattern).search_words(value) is (reference(pattern, True).search(value) is not None), (pattern, value)
