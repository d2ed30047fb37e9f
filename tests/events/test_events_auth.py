"""Authorisation rules of room versions 10, 11 and 12, family by family.

Each test builds real signed events with the builder, then runs check_auth
against the room state, asserting both an allowed and a rejected case so it
fails if the rule were missing or inverted.
"""

from __future__ import annotations

import copy

import pytest

from homeserver.events import (
    ROOM_VERSIONS,
    AuthError,
    FormatError,
    build_event,
    check_auth,
    check_auth_events,
    redaction_allowed,
    sign_json,
    validate_pdu_format,
    verify_key_of,
    encode_verify_key,
    generate_signing_key,
)
from homeserver.events.hashing import compute_event_id

from events_testlib import ALICE, BOB, CAROL, DAVE, KEY, Room

ALL = ["10", "11", "12"]


def rejected(room: Room, pdu: dict, state=None, match: str | None = None) -> None:
    with pytest.raises(AuthError, match=match):
        room.check(pdu, state)


def member(room: Room, sender: str, target: str, membership: str, **kw) -> dict:
    content = {"membership": membership, **kw.pop("content", {})}
    return room.build(sender, "m.room.member", content, target, **kw)[1]


# --- m.room.create -------------------------------------------------------------


def _create(version: str, **over) -> dict:
    rv = ROOM_VERSIONS[version]
    # v12 create events are built without a room_id; tests add one afterwards.
    room_id = None if rv.room_id_is_create_event_id else over.pop("room_id", "!r:a.test")
    content = over.pop("content", {"room_version": version})
    _, pdu = build_event(rv, room_id=room_id, sender=over.pop("sender", ALICE), event_type="m.room.create",
                         state_key="", content=content, prev_event_ids=[], auth_event_ids=[], depth=1,
                         origin_server_ts=1, server_name="a.test", signing_key=KEY)
    pdu.update(over)
    return pdu


@pytest.mark.parametrize("version", ALL)
def test_create_allowed_and_prev_events_rejected(version: str) -> None:
    rv = ROOM_VERSIONS[version]
    check_auth(rv, _create(version), {})
    with pytest.raises(AuthError, match="prev_events"):
        check_auth(rv, _create(version, prev_events=["$x"]), {})
    with pytest.raises(AuthError, match="room_version"):
        check_auth(rv, _create(version, content={"room_version": "999"}), {})


def test_create_room_id_domain_v10_v11() -> None:
    for version in ("10", "11"):
        rv = ROOM_VERSIONS[version]
        check_auth(rv, _create(version, room_id="!r:a.test"), {})
        with pytest.raises(AuthError, match="domain"):
            check_auth(rv, _create(version, room_id="!r:b.test"), {})


def test_create_creator_required_only_in_v10() -> None:
    pdu = _create("10")
    del pdu["content"]["creator"]
    with pytest.raises(AuthError, match="creator"):
        check_auth(ROOM_VERSIONS["10"], pdu, {})
    check_auth(ROOM_VERSIONS["11"], _create("11", content={}), {})


def test_create_v12_room_id_and_additional_creators() -> None:
    rv = ROOM_VERSIONS["12"]
    with pytest.raises(AuthError, match="room_id"):
        check_auth(rv, _create("12", room_id="!r:a.test"), {})
    check_auth(rv, _create("12", content={"additional_creators": [BOB, CAROL]}), {})
    for bad in ("@bob:b.test", [1], ["not-a-user"], ["@bob"], [BOB, None]):
        with pytest.raises(AuthError, match="additional_creators"):
            check_auth(rv, _create("12", content={"additional_creators": bad}), {})
    # v11 does not validate additional_creators (no such concept there)
    check_auth(ROOM_VERSIONS["11"], _create("11", content={"additional_creators": "x"}), {})


def test_v12_room_id_must_name_the_create_event() -> None:
    room = Room("12")
    room.setup_basic()
    _, msg = room.build(ALICE, "m.room.message", {"body": "hi"})
    room.check(msg)
    other = Room("12", create_content={"x": 1})
    rejected(room, {**msg, "room_id": other.room_id}, match="create event")


def test_missing_create_rejected() -> None:
    room = Room("11")
    room.setup_basic()
    _, msg = room.build(ALICE, "m.room.message", {"body": "hi"})
    state = dict(room.state)
    del state[("m.room.create", "")]
    rejected(room, msg, state, match="create")


# --- joins ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_creator_first_join(version: str) -> None:
    room = Room(version)
    _, join = room.build(ALICE, "m.room.member", {"membership": "join"}, ALICE)
    room.check(join)
    # Someone else cannot use the rule (no join rules yet -> not allowed)
    _, bob_join = room.build(BOB, "m.room.member", {"membership": "join"}, BOB)
    rejected(room, bob_join)
    # Nor can the creator once the previous event is not the create event
    _, late = room.build(ALICE, "m.room.member", {"membership": "join"}, ALICE, prev=["$other"])
    rejected(room, late)


@pytest.mark.parametrize("version", ALL)
def test_join_public_and_invite_rules(version: str) -> None:
    room = Room(version)
    room.setup_basic(join_rule="public")
    room.check(member(room, BOB, BOB, "join"))
    rejected(room, member(room, ALICE, BOB, "join"), match="behalf")

    room = Room(version)
    room.setup_basic(join_rule="invite")
    rejected(room, member(room, BOB, BOB, "join"), match="invite")
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    room.check(member(room, BOB, BOB, "join"))


@pytest.mark.parametrize("version", ALL)
def test_join_banned_rejected(version: str) -> None:
    room = Room(version)
    room.setup_basic(join_rule="public")
    room.join(BOB)
    room.send(ALICE, "m.room.member", {"membership": "ban"}, BOB)
    rejected(room, member(room, BOB, BOB, "join"), match="banned")


@pytest.mark.parametrize("version", ALL)
def test_join_knock_rule_needs_invite(version: str) -> None:
    room = Room(version)
    room.setup_basic(join_rule="knock")
    rejected(room, member(room, BOB, BOB, "join"))
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    room.check(member(room, BOB, BOB, "join"))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_join_restricted(version: str, rule: str) -> None:
    room = Room(version)
    room.setup_basic({CAROL: 0}, join_rule=rule, extra_pl={"invite": 0})
    # Carol is in the power levels but has *not* joined.
    via = {"join_authorised_via_users_server": ALICE}
    # No authoriser at all
    rejected(room, member(room, BOB, BOB, "join"), match="authorise")
    # Authoriser joined with enough power, and its server co-signed: allowed
    room.check(member(room, BOB, BOB, "join", content=via, signers=["a.test"]))
    # Same but the authorising server did not sign
    rejected(room, member(room, BOB, BOB, "join", content=via), match="signed")
    # Authoriser not joined
    rejected(room, member(room, BOB, BOB, "join", content={"join_authorised_via_users_server": CAROL},
                          signers=["c.test"]), match="authorise")


@pytest.mark.parametrize("version", ALL)
def test_join_restricted_authoriser_needs_invite_power(version: str) -> None:
    room = Room(version)
    room.setup_basic({CAROL: 0}, join_rule="restricted", extra_pl={"invite": 10})
    # Carol cannot join a restricted room herself without an authoriser; invite her first.
    room.send(ALICE, "m.room.member", {"membership": "invite"}, CAROL)
    room.join(CAROL)
    via = {"join_authorised_via_users_server": CAROL}
    rejected(room, member(room, BOB, BOB, "join", content=via, signers=["c.test"]), match="authorise")
    # An invited user needs no authoriser
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    room.check(member(room, BOB, BOB, "join"))


# --- invites -------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_invite(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 0}, join_rule="invite", extra_pl={"invite": 0})
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    room.join(BOB)
    room.check(member(room, BOB, CAROL, "invite"))
    # Target already joined
    rejected(room, member(room, BOB, ALICE, "invite"), match="already")
    # Sender not joined
    rejected(room, member(room, DAVE, CAROL, "invite"), match="not joined")


@pytest.mark.parametrize("version", ALL)
def test_invite_level_and_banned_target(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 0}, join_rule="public", extra_pl={"invite": 50})
    room.join(BOB)
    rejected(room, member(room, BOB, CAROL, "invite"), match="power")
    room.check(member(room, ALICE, CAROL, "invite"))
    room.join(CAROL)
    room.send(ALICE, "m.room.member", {"membership": "ban"}, CAROL)
    rejected(room, member(room, ALICE, CAROL, "invite"), match="ban")


def _third_party_setup(version: str):
    room = Room(version)
    room.setup_basic(join_rule="invite")
    id_server_key = generate_signing_key("0")
    public_key = encode_verify_key(verify_key_of(id_server_key))
    room.send(ALICE, "m.room.third_party_invite",
              {"display_name": "c...", "key_validity_url": "https://id.test/isvalid",
               "public_key": public_key, "public_keys": [{"public_key": public_key}]}, "tok")
    signed = sign_json({"mxid": CAROL, "token": "tok"}, "id.test", id_server_key)
    return room, signed


@pytest.mark.parametrize("version", ALL)
def test_third_party_invite(version: str) -> None:
    room, signed = _third_party_setup(version)
    ok = member(room, ALICE, CAROL, "invite", content={"third_party_invite": {"display_name": "c", "signed": signed}})
    room.check(ok)
    # mxid mismatch
    bad = member(room, ALICE, DAVE, "invite", content={"third_party_invite": {"signed": signed}})
    rejected(room, bad, match="mxid")
    # signature by a key that is not in the m.room.third_party_invite event
    forged = sign_json({"mxid": CAROL, "token": "tok"}, "id.test", generate_signing_key("0"))
    rejected(room, member(room, ALICE, CAROL, "invite", content={"third_party_invite": {"signed": forged}}),
             match="signature")
    # tampered signed object
    tampered = {**copy.deepcopy(signed), "extra": 1}
    rejected(room, member(room, ALICE, CAROL, "invite", content={"third_party_invite": {"signed": tampered}}),
             match="signature")
    # no signed / unknown token
    rejected(room, member(room, ALICE, CAROL, "invite", content={"third_party_invite": {}}), match="signed")
    other_token = sign_json({"mxid": CAROL, "token": "nope"}, "id.test", generate_signing_key("0"))
    rejected(room, member(room, ALICE, CAROL, "invite", content={"third_party_invite": {"signed": other_token}}),
             match="token")


@pytest.mark.parametrize("version", ALL)
def test_third_party_invite_sender_must_match(version: str) -> None:
    room, signed = _third_party_setup(version)
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    room.join(BOB)
    rejected(room, member(room, BOB, CAROL, "invite", content={"third_party_invite": {"signed": signed}}),
             match="sender")


# --- leave / kick / ban / unban --------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_leave_and_kick(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 50, CAROL: 0}, extra_pl={"kick": 50})
    room.join(BOB)
    room.join(CAROL)
    room.check(member(room, CAROL, CAROL, "leave"))
    rejected(room, member(room, DAVE, DAVE, "leave"), match="not in")
    room.check(member(room, BOB, CAROL, "leave"))  # kick a lower user
    rejected(room, member(room, CAROL, BOB, "leave"), match="kick")  # below kick level
    # Equal power cannot kick: target level must be strictly below
    room2 = Room(version)
    room2.setup_basic({BOB: 50, CAROL: 50})
    room2.join(BOB)
    room2.join(CAROL)
    rejected(room2, member(room2, BOB, CAROL, "leave"), match="kick")


@pytest.mark.parametrize("version", ALL)
def test_invited_user_can_reject(version: str) -> None:
    room = Room(version)
    room.setup_basic(join_rule="invite")
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    room.check(member(room, BOB, BOB, "leave"))


@pytest.mark.parametrize("version", ALL)
def test_ban_and_unban(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 50, CAROL: 0}, extra_pl={"ban": 50, "kick": 40})
    room.join(BOB)
    room.join(CAROL)
    rejected(room, member(room, CAROL, BOB, "ban"), match="ban")
    rejected(room, member(room, DAVE, CAROL, "ban"), match="not joined")
    room.send(BOB, "m.room.member", {"membership": "ban"}, CAROL)
    # Unban needs the ban level too, not just kick
    room.send(ALICE, "m.room.power_levels",
              {"users": {**({ALICE: 100} if version != "12" else {}), BOB: 45}, "ban": 50, "kick": 40,
               "events": {"m.room.power_levels": 100}}, "")
    rejected(room, member(room, BOB, CAROL, "leave"), match="unban")
    room.check(member(room, ALICE, CAROL, "leave"))


# --- knock ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_knock(version: str) -> None:
    for rule in ("knock", "knock_restricted"):
        room = Room(version)
        room.setup_basic(join_rule=rule)
        room.check(member(room, BOB, BOB, "knock"))
        rejected(room, member(room, ALICE, BOB, "knock"), match="behalf")
        room.send(BOB, "m.room.member", {"membership": "knock"}, BOB)
        room.check(member(room, BOB, BOB, "leave"))  # rescind a knock
        room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
        rejected(room, member(room, BOB, BOB, "knock"), match="invite")
    room = Room(version)
    room.setup_basic(join_rule="public")
    rejected(room, member(room, BOB, BOB, "knock"), match="knock")


@pytest.mark.parametrize("version", ALL)
def test_unknown_membership_and_missing_fields(version: str) -> None:
    room = Room(version)
    room.setup_basic()
    rejected(room, member(room, ALICE, ALICE, "dance"), match="unknown")
    _, pdu = room.build(ALICE, "m.room.member", {"displayname": "x"}, ALICE)
    rejected(room, pdu, match="membership")


# --- other events -------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_sender_must_be_joined_and_have_power(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 10}, extra_pl={"events": {"m.room.power_levels": 100, "m.room.name": 20}})
    room.join(BOB)
    _, msg = room.build(CAROL, "m.room.message", {"body": "hi"})
    rejected(room, msg, match="not joined")
    room.check(room.build(BOB, "m.room.message", {"body": "hi"})[1])
    rejected(room, room.build(BOB, "m.room.topic", {"topic": "x"}, "")[1], match="power")  # state_default 50
    rejected(room, room.build(BOB, "m.room.name", {"name": "x"}, "")[1], match="power")  # events override 20
    room.check(room.build(ALICE, "m.room.name", {"name": "x"}, "")[1])


@pytest.mark.parametrize("version", ALL)
def test_user_state_keys(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 100} if version != "12" else {BOB: 99}, extra_pl={"state_default": 0})
    room.join(BOB)
    room.check(room.build(BOB, "org.example.state", {}, BOB)[1])
    rejected(room, room.build(BOB, "org.example.state", {}, ALICE)[1], match="another user")


@pytest.mark.parametrize("version", ALL)
def test_third_party_invite_event_needs_invite_level(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 0}, extra_pl={"invite": 10, "state_default": 0})
    room.join(BOB)
    rejected(room, room.build(BOB, "m.room.third_party_invite", {"public_key": "x"}, "t")[1], match="invite")
    room.check(room.build(ALICE, "m.room.third_party_invite", {"public_key": "x"}, "t")[1])


@pytest.mark.parametrize("version", ALL)
def test_m_federate_false(version: str) -> None:
    room = Room(version, create_content={"m.federate": False})
    room.setup_basic(join_rule="public")
    rejected(room, member(room, BOB, BOB, "join"), match="federat")
    room.check(member(room, "@other:a.test", "@other:a.test", "join"))


# --- power levels --------------------------------------------------------------------


def _pl(version: str, users: dict, **extra) -> dict:
    if version != "12":
        users = {ALICE: 100, **users}
    return {"users": users, "events": {"m.room.power_levels": 50}, **extra}


@pytest.mark.parametrize("version", ALL)
def test_power_levels_types(version: str) -> None:
    room = Room(version)
    room.setup_basic()
    room.check(room.build(ALICE, "m.room.power_levels", _pl(version, {BOB: 10}), "")[1])
    for bad in (
        _pl(version, {BOB: "10"}),
        _pl(version, {"bob": 10}),
        _pl(version, {BOB: 10}, ban="50"),
        _pl(version, {BOB: 10}, kick=True),
        _pl(version, {BOB: 10}, notifications={"room": "50"}),
        {**_pl(version, {BOB: 10}), "events": {"m.room.name": "1"}},
        {**_pl(version, {BOB: 10}), "events": []},
        {**_pl(version, {}), "users": []},
    ):
        rejected(room, room.build(ALICE, "m.room.power_levels", bad, "")[1], match="power level")


@pytest.mark.parametrize("version", ALL)
def test_power_levels_no_previous_event_allows_anything(version: str) -> None:
    room = Room(version)
    room.join(ALICE)
    # Without a PL event the creator has 100 (v10/11) or infinite (v12) and
    # any well-formed PL content is allowed.
    room.check(room.build(ALICE, "m.room.power_levels", _pl(version, {BOB: 1000}), "")[1])


@pytest.mark.parametrize("version", ALL)
def test_power_levels_change_rules(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 50, CAROL: 50, DAVE: 10},
                     extra_pl={"events": {"m.room.power_levels": 50, "m.room.tombstone": 100}})
    room.join(BOB)
    users = {BOB: 50, CAROL: 50, DAVE: 10}
    base = {"events": {"m.room.power_levels": 50, "m.room.tombstone": 100}, "state_default": 50, "ban": 50,
            "kick": 50, "redact": 50, "invite": 0, "users_default": 0, "events_default": 0}
    if version != "12":
        users[ALICE] = 100

    def pl(**over) -> dict:
        content = copy.deepcopy({**base, "users": users})
        for k, v in over.items():
            if k == "users":
                content["users"].update(v)
            else:
                content[k] = v
        return content

    def by_bob(content: dict) -> dict:
        return room.build(BOB, "m.room.power_levels", content, "")[1]

    room.check(by_bob(pl(users={DAVE: 50})))  # up to own level: ok
    rejected(room, by_bob(pl(users={DAVE: 51})), match="above your own")  # cannot grant above own
    rejected(room, by_bob(pl(users={CAROL: 0})), match="not below")  # cannot demote a peer
    room.check(by_bob(pl(users={BOB: 0})))  # may demote oneself
    rejected(room, by_bob(pl(ban=60)), match="ban")  # new value above own
    rejected(room, by_bob(pl(events={"m.room.power_levels": 50})), match="tombstone")  # removing a 100 entry
    rejected(room, by_bob(pl(events={**base["events"], "m.room.tombstone": 40})), match="tombstone")
    room.check(by_bob(pl(events={**base["events"], "m.room.topic": 50})))  # add at own level
    rejected(room, by_bob(pl(notifications={"room": 60})), match="notifications")
    room.check(by_bob(pl(notifications={"room": 50})))
    # removing Alice (100) from users is a change of a higher entry
    if version != "12":
        content = pl()
        del content["users"][ALICE]
        rejected(room, by_bob(content), match="not below")


def test_v12_creators_infinite_and_not_in_users() -> None:
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.setup_basic({CAROL: 100})
    room.join(BOB)
    room.join(CAROL)
    # creators may not be listed
    rejected(room, room.build(ALICE, "m.room.power_levels", {"users": {ALICE: 100}}, "")[1], match="creator")
    rejected(room, room.build(ALICE, "m.room.power_levels", {"users": {BOB: 100}}, "")[1], match="creator")
    # A creator can demote a 100 user and set levels above 100 (infinite power)
    room.check(room.build(BOB, "m.room.power_levels", {"users": {CAROL: 0}, "ban": 1000}, "")[1])
    # ... kick Carol, who has 100
    room.check(member(room, BOB, CAROL, "leave"))
    # and a 100-level user cannot kick or ban a creator
    rejected(room, member(room, CAROL, BOB, "ban"), match="ban")
    rejected(room, member(room, CAROL, ALICE, "leave"), match="kick")


def test_v11_has_no_infinite_creator() -> None:
    room = Room("11", create_content={"additional_creators": [BOB]})
    room.setup_basic({CAROL: 100})
    room.join(CAROL)
    # Alice (100) cannot demote Carol (100) in v11
    rejected(room, room.build(ALICE, "m.room.power_levels", {"users": {ALICE: 100, CAROL: 0}}, "")[1],
             match="not below")
    room.join(BOB)
    # additional_creators means nothing in v11: Bob has the default 0
    rejected(room, member(room, BOB, CAROL, "leave"), match="kick")


# --- redactions --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_redaction_auth_and_application(version: str) -> None:
    room = Room(version)
    room.setup_basic({BOB: 0, CAROL: 0})
    room.join(BOB)
    room.join(CAROL)
    carol_eid = room.send(CAROL, "m.room.message", {"body": "c"})
    # The auth rules do not consult the redact level: Bob may *send* this.
    _, bob_redacts_carol = room.build(BOB, "m.room.redaction", {}, redacts=carol_eid)
    room.check(bob_redacts_carol)
    # ... but it only *applies* with the redact level or the same server.
    auth_state = room.auth_state()
    assert not redaction_allowed(room.rv, bob_redacts_carol, room.events[carol_eid], auth_state)
    _, carol_self = room.build(CAROL, "m.room.redaction", {}, redacts=carol_eid)
    assert redaction_allowed(room.rv, carol_self, room.events[carol_eid], auth_state)
    _, alice_redacts = room.build(ALICE, "m.room.redaction", {}, redacts=carol_eid)
    assert redaction_allowed(room.rv, alice_redacts, room.events[carol_eid], auth_state)
    same_server = {**bob_redacts_carol, "sender": "@bob2:c.test"}
    assert redaction_allowed(room.rv, same_server, room.events[carol_eid], auth_state)
    # events/events_default gate sending a redaction
    room.send(ALICE, "m.room.power_levels", _pl(version, {BOB: 0, CAROL: 0}, events={
        "m.room.power_levels": 100, "m.room.redaction": 10}), "")
    rejected(room, room.build(BOB, "m.room.redaction", {}, redacts=carol_eid)[1], match="power")


# --- size limits ------------------------------------------------------------------------


def test_size_limits() -> None:
    room = Room("11")
    room.setup_basic()
    room.check(room.build(ALICE, "m.room.message", {"body": "x" * 60000})[1])
    rejected(room, room.build(ALICE, "m.room.message", {"body": "x" * 66000})[1], match="limit")
    rejected(room, room.build(ALICE, "m.room.topic", {}, "k" * 256)[1], match="state_key")
    room.check(room.build(ALICE, "m.room.topic", {}, "k" * 255)[1])
    rejected(room, room.build(ALICE, "t" * 256, {})[1], match="type")
    # bytes, not characters
    rejected(room, room.build(ALICE, "m.room.topic", {}, "é" * 128)[1], match="state_key")


# --- auth_events checks -------------------------------------------------------------------


def test_check_auth_events_v11() -> None:
    room = Room("11")
    room.setup_basic()
    room.join(BOB)
    eid, msg = room.build(BOB, "m.room.message", {"body": "x"})
    auth_map = {a: room.events[a] for a in msg["auth_events"]}
    state = check_auth_events(room.rv, msg, auth_map)
    assert set(state) == {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB)}
    check_auth(room.rv, msg, state)
    # not selected (join rules for a message)
    jr = room.state[("m.room.join_rules", "")]
    with pytest.raises(AuthError, match="not selected"):
        check_auth_events(room.rv, {**msg, "auth_events": msg["auth_events"] + [jr]}, {**auth_map, jr: room.events[jr]})
    # rejected auth event
    with pytest.raises(AuthError, match="rejected"):
        check_auth_events(room.rv, msg, auth_map, rejected_event_ids={msg["auth_events"][0]})
    # missing create
    no_create = {**msg, "auth_events": [a for a in msg["auth_events"] if a != room.create_id]}
    with pytest.raises(AuthError, match="create"):
        check_auth_events(room.rv, no_create, auth_map)
    # other room
    other = {k: ({**v, "room_id": "!other:a.test"} if k == msg["auth_events"][-1] else v) for k, v in auth_map.items()}
    with pytest.raises(AuthError, match="another room"):
        check_auth_events(room.rv, msg, other)
    assert eid


def test_check_auth_events_duplicate() -> None:
    room = Room("10")
    room.setup_basic()
    first_pl = room.state[("m.room.power_levels", "")]
    room.send(ALICE, "m.room.power_levels", _pl("10", {BOB: 1}), "")
    _, msg = room.build(ALICE, "m.room.message", {"body": "x"})
    dup = {**msg, "auth_events": msg["auth_events"] + [first_pl]}
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events(room.rv, dup, {a: room.events[a] for a in dup["auth_events"]})


def test_check_auth_events_v12_create_implicit() -> None:
    room = Room("12")
    room.setup_basic()
    _, msg = room.build(ALICE, "m.room.message", {"body": "x"})
    assert room.create_id not in msg["auth_events"]
    auth_map = {a: room.events[a] for a in msg["auth_events"]}
    state = check_auth_events(room.rv, msg, auth_map, create_event=room.events[room.create_id])
    assert state[("m.room.create", "")] is room.events[room.create_id]
    check_auth(room.rv, msg, state)
    with pytest.raises(AuthError, match="create"):
        check_auth_events(room.rv, msg, auth_map)
    # Citing the create event explicitly is a selection violation in v12
    cited = {**msg, "auth_events": msg["auth_events"] + [room.create_id]}
    with pytest.raises(AuthError, match="not selected"):
        check_auth_events(room.rv, cited, {**auth_map, room.create_id: room.events[room.create_id]},
                          create_event=room.events[room.create_id])


# --- format ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_validate_pdu_format(version: str) -> None:
    room = Room(version)
    room.setup_basic()
    _, msg = room.build(ALICE, "m.room.message", {"body": "x"})
    validate_pdu_format(room.rv, msg)
    validate_pdu_format(room.rv, room.events[room.create_id])
    bad_cases = [
        {**msg, "event_id": compute_event_id(room.rv, msg)},
        {**msg, "depth": "1"},
        {**msg, "content": {"n": 1.5}},
        {**msg, "content": {"n": 2**53}},
        {**msg, "prev_events": ["$x"] * 21},
        {**msg, "auth_events": "nope"},
        {**msg, "sender": "alice"},
        {**msg, "hashes": {}},
        {**msg, "room_id": "!nope"},
        {k: v for k, v in msg.items() if k != "signatures"},
        {k: v for k, v in msg.items() if k != "origin_server_ts"},
        {**msg, "state_key": 5},
    ]
    for bad in bad_cases:
        with pytest.raises(FormatError):
            validate_pdu_format(room.rv, bad)
    if version == "12":
        with pytest.raises(FormatError):
            validate_pdu_format(room.rv, {**msg, "room_id": "!abc:a.test"})
