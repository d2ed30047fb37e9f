"""Room version table, auth event selection and power level helpers."""

from __future__ import annotations

import pytest

from homeserver.events import (
    CREATOR_POWER_LEVEL,
    DEFAULT_ROOM_VERSION,
    ROOM_VERSIONS,
    RedactionRules,
    StateResVersion,
    UnsupportedRoomVersion,
    auth_event_types,
    default_power_levels_content,
    get_room_version,
    named_level,
    notification_level,
    required_event_level,
    room_creators,
    select_auth_event_ids,
    user_power_level,
)

V10, V11, V12 = ROOM_VERSIONS["10"], ROOM_VERSIONS["11"], ROOM_VERSIONS["12"]
A, B, C = "@a:a.test", "@b:b.test", "@c:c.test"


def test_room_version_table() -> None:
    assert set(ROOM_VERSIONS) == {"10", "11", "12"}
    assert DEFAULT_ROOM_VERSION == "12" and get_room_version("12") is V12
    with pytest.raises(UnsupportedRoomVersion):
        get_room_version("9")
    assert (V10.redaction_rules, V11.redaction_rules, V12.redaction_rules) == (
        RedactionRules.V9, RedactionRules.V11, RedactionRules.V11)
    assert [v.implicit_room_creator for v in (V10, V11, V12)] == [False, True, True]
    assert [v.redacts_in_content for v in (V10, V11, V12)] == [False, True, True]
    assert [v.room_id_is_create_event_id for v in (V10, V11, V12)] == [False, False, True]
    assert [v.create_event_in_auth_events for v in (V10, V11, V12)] == [True, True, False]
    assert [v.creators_have_infinite_power for v in (V10, V11, V12)] == [False, False, True]
    assert [v.state_res for v in (V10, V11, V12)] == [StateResVersion.V2, StateResVersion.V2, StateResVersion.V2_1]
    for v in (V10, V11, V12):
        assert v.knock_join_rule and v.restricted_join_rule and v.knock_restricted_join_rule
        assert v.enforce_int_power_levels and v.event_id_is_reference_hash
    with pytest.raises(Exception):
        V10.identifier = "x"  # type: ignore[misc]  # frozen


# --- auth events selection --------------------------------------------------------


def test_auth_event_types_basic() -> None:
    assert auth_event_types(V10, "m.room.create", "", A, {}) == []
    assert auth_event_types(V10, "m.room.message", None, A, {}) == [
        ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", A)]
    assert auth_event_types(V11, "m.room.topic", "", A, {}) == [
        ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", A)]
    # v12 never selects the create event
    assert auth_event_types(V12, "m.room.message", None, A, {}) == [("m.room.power_levels", ""), ("m.room.member", A)]


@pytest.mark.parametrize("rv", [V10, V12], ids=["v10", "v12"])
def test_auth_event_types_membership(rv) -> None:
    pre = [("m.room.create", "")] if rv.create_event_in_auth_events else []
    base = pre + [("m.room.power_levels", "")]
    assert auth_event_types(rv, "m.room.member", A, A, {"membership": "join"}) == base + [
        ("m.room.member", A), ("m.room.join_rules", "")]
    assert auth_event_types(rv, "m.room.member", B, A, {"membership": "invite"}) == base + [
        ("m.room.member", A), ("m.room.member", B), ("m.room.join_rules", "")]
    assert auth_event_types(rv, "m.room.member", B, A, {"membership": "knock"})[-1] == ("m.room.join_rules", "")
    # leave / ban do not need the join rules
    assert auth_event_types(rv, "m.room.member", B, A, {"membership": "ban"}) == base + [
        ("m.room.member", A), ("m.room.member", B)]
    tpi = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok", "mxid": B}}}
    assert auth_event_types(rv, "m.room.member", B, A, tpi)[-1] == ("m.room.third_party_invite", "tok")
    restricted = {"membership": "join", "join_authorised_via_users_server": C}
    assert auth_event_types(rv, "m.room.member", A, A, restricted)[-1] == ("m.room.member", C)
    # the authoriser only matters for joins
    assert ("m.room.member", C) not in auth_event_types(
        rv, "m.room.member", A, A, {"membership": "leave", "join_authorised_via_users_server": C})


def test_select_auth_event_ids() -> None:
    state = {("m.room.create", ""): "$c", ("m.room.power_levels", ""): "$pl", ("m.room.member", A): "$ma",
             ("m.room.join_rules", ""): "$jr", ("m.room.topic", ""): "$t"}
    assert select_auth_event_ids(V11, "m.room.member", B, B, {"membership": "join"}, state) == ["$c", "$pl", "$jr"]
    assert select_auth_event_ids(V12, "m.room.message", None, A, {}, state) == ["$pl", "$ma"]


# --- power levels --------------------------------------------------------------------


def _create(rv, sender=A, **content) -> dict:
    if not rv.implicit_room_creator:
        content.setdefault("creator", sender)
    return {"type": "m.room.create", "state_key": "", "sender": sender, "content": content}


def test_levels_without_power_levels_event() -> None:
    for rv in (V10, V11):
        assert user_power_level(rv, A, _create(rv), None) == 100
        assert user_power_level(rv, B, _create(rv), None) == 0
    assert user_power_level(V12, A, _create(V12), None) == CREATOR_POWER_LEVEL
    # the spec's defaults with no power levels event
    assert required_event_level(None, "m.room.topic", True) == 50
    assert required_event_level(None, "m.room.message", False) == 0
    assert [named_level(None, n) for n in ("invite", "kick", "ban", "redact")] == [0, 50, 50, 50]
    assert notification_level(None) == 50


def test_v10_creator_comes_from_content() -> None:
    create = {"type": "m.room.create", "state_key": "", "sender": A, "content": {"creator": B}}
    assert room_creators(V10, create) == {B}
    assert room_creators(V11, create) == {A}


def test_levels_with_power_levels_event() -> None:
    pl = {"content": {"users": {B: 75}, "users_default": 5, "events": {"m.room.name": 20},
                      "state_default": 40, "events_default": 1, "kick": 10, "notifications": {"room": 90}}}
    assert user_power_level(V11, B, _create(V11), pl) == 75
    assert user_power_level(V11, A, _create(V11), pl) == 5  # creator gets no 100 once a PL event exists
    assert required_event_level(pl, "m.room.name", True) == 20
    assert required_event_level(pl, "m.room.topic", True) == 40
    assert required_event_level(pl, "m.room.message", False) == 1
    assert named_level(pl, "kick") == 10 and named_level(pl, "ban") == 50
    assert notification_level(pl, "room") == 90


def test_v12_creators_are_infinite() -> None:
    create = _create(V12, additional_creators=[B])
    pl = {"content": {"users": {C: 2**53 - 1}}}
    assert room_creators(V12, create) == {A, B}
    assert user_power_level(V12, B, create, pl) == CREATOR_POWER_LEVEL
    assert user_power_level(V12, C, create, pl) < CREATOR_POWER_LEVEL
    # additional_creators has no meaning before v12
    assert room_creators(V11, create) == {A}


def test_default_power_levels_content() -> None:
    v11 = default_power_levels_content(V11, A)
    v12 = default_power_levels_content(V12, A)
    assert v11["users"] == {A: 100}
    assert v12["users"] == {}  # creators must not be listed in v12
    assert v12["events"]["m.room.tombstone"] > v12["state_default"]
