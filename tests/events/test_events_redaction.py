"""The redaction algorithm per room version."""

from __future__ import annotations

import copy

import pytest

from homeserver.events import ROOM_VERSIONS, redact_event, redaction_target, top_level_keys_kept

V10, V11, V12 = ROOM_VERSIONS["10"], ROOM_VERSIONS["11"], ROOM_VERSIONS["12"]

BASE = {
    "event_id": "$e",
    "room_id": "!r:a.test",
    "sender": "@a:a.test",
    "state_key": "",
    "hashes": {"sha256": "h"},
    "signatures": {"a.test": {"ed25519:1": "s"}},
    "depth": 4,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "origin_server_ts": 7,
    "origin": "a.test",
    "membership": "join",
    "prev_state": [],
    "unsigned": {"age": 3},
    "extra_top_level": 1,
}


def ev(event_type: str, content: dict) -> dict:
    return {**copy.deepcopy(BASE), "type": event_type, "content": content}


def test_top_level_keys_v10_vs_v11() -> None:
    r10 = redact_event(V10, ev("m.room.message", {"body": "x"}))
    r11 = redact_event(V11, ev("m.room.message", {"body": "x"}))
    common = {"event_id", "room_id", "sender", "state_key", "hashes", "signatures", "depth", "prev_events",
              "auth_events", "origin_server_ts", "type", "content"}
    assert set(r10) == common | {"origin", "membership", "prev_state"}
    assert set(r11) == common
    assert r10["content"] == {} and r11["content"] == {}
    assert top_level_keys_kept(V12) == top_level_keys_kept(V11)


def test_input_not_mutated() -> None:
    event = ev("m.room.member", {"membership": "join", "displayname": "A"})
    before = copy.deepcopy(event)
    redacted = redact_event(V11, event)
    redacted["content"]["membership"] = "leave"
    redacted["signatures"]["a.test"]["ed25519:1"] = "changed"
    assert event == before


CONTENT_CASES = [
    # (type, content, expected v10, expected v11)
    (
        "m.room.member",
        {"membership": "join", "displayname": "A", "join_authorised_via_users_server": "@x:a.test",
         "third_party_invite": {"display_name": "d", "signed": {"mxid": "@a:a.test", "token": "t"}}},
        {"membership": "join", "join_authorised_via_users_server": "@x:a.test"},
        {"membership": "join", "join_authorised_via_users_server": "@x:a.test",
         "third_party_invite": {"signed": {"mxid": "@a:a.test", "token": "t"}}},
    ),
    (
        "m.room.create",
        {"creator": "@a:a.test", "room_version": "10", "m.federate": False, "type": "m.space"},
        {"creator": "@a:a.test"},
        {"creator": "@a:a.test", "room_version": "10", "m.federate": False, "type": "m.space"},
    ),
    (
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "other": 1},
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
    ),
    (
        "m.room.power_levels",
        {"ban": 50, "events": {"a": 1}, "events_default": 0, "kick": 50, "redact": 50, "state_default": 50,
         "users": {"@a:a.test": 100}, "users_default": 0, "invite": 0, "notifications": {"room": 50}},
        {"ban": 50, "events": {"a": 1}, "events_default": 0, "kick": 50, "redact": 50, "state_default": 50,
         "users": {"@a:a.test": 100}, "users_default": 0},
        {"ban": 50, "events": {"a": 1}, "events_default": 0, "kick": 50, "redact": 50, "state_default": 50,
         "users": {"@a:a.test": 100}, "users_default": 0, "invite": 0},
    ),
    (
        "m.room.history_visibility",
        {"history_visibility": "shared", "x": 1},
        {"history_visibility": "shared"},
        {"history_visibility": "shared"},
    ),
    (
        "m.room.redaction",
        {"redacts": "$t", "reason": "spam"},
        {},
        {"redacts": "$t"},
    ),
    ("m.room.topic", {"topic": "t"}, {}, {}),
    ("m.room.aliases", {"aliases": ["#a:a.test"]}, {}, {}),
]


@pytest.mark.parametrize("event_type,content,exp10,exp11", CONTENT_CASES)
def test_content_rules(event_type: str, content: dict, exp10: dict, exp11: dict) -> None:
    assert redact_event(V10, ev(event_type, content))["content"] == exp10
    assert redact_event(V11, ev(event_type, content))["content"] == exp11
    assert redact_event(V12, ev(event_type, content))["content"] == exp11


def test_v11_third_party_invite_without_signed() -> None:
    r = redact_event(V11, ev("m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "x"}}))
    assert r["content"] == {"membership": "invite", "third_party_invite": {}}
    r = redact_event(V11, ev("m.room.member", {"membership": "invite"}))
    assert r["content"] == {"membership": "invite"}


def test_non_object_content() -> None:
    assert redact_event(V11, ev("m.room.member", "nope"))["content"] == {}  # type: ignore[arg-type]


def test_redaction_target_per_version() -> None:
    v10_event = {"type": "m.room.redaction", "redacts": "$top", "content": {"redacts": "$inner"}}
    assert redaction_target(V10, v10_event) == "$top"
    assert redaction_target(V11, v10_event) == "$inner"
    assert redaction_target(V11, {"type": "m.room.redaction", "redacts": "$top", "content": {}}) is None
