"""Membership edge cases and createRoom options."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import V3, User
from tests.server import ServerProcess
from tests.test_rooms_helpers import (
    all_messages,
    create_room,
    expect_error,
    invite,
    invite_ok,
    join,
    leave,
    put_state,
    q,
    state_of,
    text,
)


def _post(user: User, room_id: str, action: str, body: dict[str, Any] | None = None) -> Any:
    return user.api.post(f"{V3}/rooms/{q(room_id)}/{action}", json=body or {})


def _membership(user: User, room_id: str, target: str) -> str | None:
    state = state_of(user, room_id)
    event = state.get(("m.room.member", target))
    return event["content"]["membership"] if event else None


def _joined_rooms(user: User) -> list[str]:
    return list(user.api.get(f"{V3}/joined_rooms").json()["joined_rooms"])


def test_join_rules(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    public = create_room(alice, preset="public_chat")
    join(bob, public)
    private = create_room(alice, preset="private_chat")
    expect_error(_post(bob, private, "join"), 403, "M_FORBIDDEN")
    expect_error(bob.api.post(f"{V3}/join/{q(private)}", json={}), 403, "M_FORBIDDEN")
    assert _membership(alice, private, bob.user_id) is None
    # Knocking on a room that does not allow it.
    expect_error(bob.api.post(f"{V3}/knock/{q(private)}", json={}), 403, "M_FORBIDDEN")
    expect_error(bob.api.post(f"{V3}/knock/{q(public)}", json={}), 403, "M_FORBIDDEN")

    knock_room = create_room(alice, preset="private_chat", room_version="11")
    put_state(alice, knock_room, "m.room.join_rules", {"join_rule": "knock"})
    response = carol.api.post(f"{V3}/knock/{q(knock_room)}", json={"reason": "let me in"})
    assert response.status_code == 200, response.text
    assert response.json() == {"room_id": knock_room}
    member = state_of(alice, knock_room)[("m.room.member", carol.user_id)]
    assert member["content"]["membership"] == "knock"
    assert member["content"]["reason"] == "let me in"
    # Knocking is not joining: still forbidden to read or send.
    expect_error(carol.api.put(f"{V3}/rooms/{q(knock_room)}/send/m.room.message/t", json={"body": "x", "msgtype": "m.text"}), 403)
    # Knock on an alias works too; then the invite-accept dance.
    invite_ok(alice, knock_room, carol)
    assert _membership(alice, knock_room, carol.user_id) == "invite"
    join(carol, knock_room)
    assert _membership(alice, knock_room, carol.user_id) == "join"
    assert knock_room in _joined_rooms(carol)


def test_kick_ban_unban_permissions(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    join(carol, room_id)
    # Bob (power 0) may not kick, ban or unban; each 403 says why.
    for action in ("kick", "ban"):
        body = expect_error(_post(bob, room_id, action, {"user_id": carol.user_id}), 403, "M_FORBIDDEN")
        assert body["error"]
    assert _membership(alice, room_id, carol.user_id) == "join"
    # Kicking someone not in the room.
    outsider = new_user()
    expect_error(_post(alice, room_id, "kick", {"user_id": outsider.user_id}), 403, "M_FORBIDDEN")
    assert _membership(alice, room_id, outsider.user_id) is None
    # Alice kicks with a reason; carol may rejoin a public room.
    assert _post(alice, room_id, "kick", {"user_id": carol.user_id, "reason": "cool off"}).status_code == 200
    kicked = state_of(alice, room_id)[("m.room.member", carol.user_id)]
    assert kicked["content"] == {"membership": "leave", "reason": "cool off"}
    assert kicked["sender"] == alice.user_id
    join(carol, room_id)
    # Ban; a banned user may not join, nor be invited.
    assert _post(alice, room_id, "ban", {"user_id": carol.user_id, "reason": "spam"}).status_code == 200
    assert _membership(alice, room_id, carol.user_id) == "ban"
    expect_error(_post(carol, room_id, "join"), 403, "M_FORBIDDEN")
    expect_error(invite(alice, room_id, carol), 403, "M_FORBIDDEN")
    # Banning someone who never joined works too.
    assert _post(alice, room_id, "ban", {"user_id": outsider.user_id}).status_code == 200
    expect_error(_post(outsider, room_id, "join"), 403, "M_FORBIDDEN")
    # Unban: bob may not; unbanning someone not banned is refused; alice may.
    expect_error(_post(bob, room_id, "unban", {"user_id": carol.user_id}), 403, "M_FORBIDDEN")
    expect_error(_post(alice, room_id, "unban", {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    assert _membership(alice, room_id, bob.user_id) == "join"
    assert _post(alice, room_id, "unban", {"user_id": carol.user_id}).status_code == 200
    assert _membership(alice, room_id, carol.user_id) == "leave"
    join(carol, room_id)
    # A user may not kick someone with equal or higher power.
    power = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels").json()
    power["users"][bob.user_id] = 50
    put_state(alice, room_id, "m.room.power_levels", power)
    assert _post(bob, room_id, "kick", {"user_id": carol.user_id}).status_code == 200
    expect_error(_post(bob, room_id, "kick", {"user_id": alice.user_id}), 403, "M_FORBIDDEN")
    assert _membership(alice, room_id, alice.user_id) == "join"


def test_leave_and_forget(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    assert room_id in _joined_rooms(bob)
    expect_error(_post(bob, room_id, "forget"), 400)
    leave(bob, room_id)
    assert room_id not in _joined_rooms(bob)
    # Leaving again changes nothing.
    before = len(all_messages(alice, room_id))
    assert _post(bob, room_id, "leave").status_code == 200
    assert len(all_messages(alice, room_id)) == before
    assert _post(bob, room_id, "forget").status_code == 200
    assert room_id not in _joined_rooms(bob)
    # Never in the room: leaving is refused.
    outsider = new_user()
    expect_error(_post(outsider, room_id, "leave"), 403, "M_FORBIDDEN")


def test_members_filters_and_at(new_user: Callable[..., User]) -> None:
    alice, bob, carol, dave = new_user(), new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    marker = text(alice, room_id, "marker")
    at = alice.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(marker)}", params={"limit": 0}).json()["end"]
    join(carol, room_id)
    invite_ok(alice, room_id, dave)
    leave(bob, room_id)

    def members(**params: Any) -> dict[str, str]:
        response = alice.api.get(f"{V3}/rooms/{q(room_id)}/members", params=params)
        assert response.status_code == 200, response.text
        return {e["state_key"]: e["content"]["membership"] for e in response.json()["chunk"]}

    assert members() == {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "join", dave.user_id: "invite"}
    assert members(membership="join") == {alice.user_id: "join", carol.user_id: "join"}
    assert members(not_membership="join") == {bob.user_id: "leave", dave.user_id: "invite"}
    assert members(membership="invite") == {dave.user_id: "invite"}
    assert members(not_membership="leave", membership="join") == {alice.user_id: "join", carol.user_id: "join"}
    assert members(at=at) == {alice.user_id: "join", bob.user_id: "join"}
    assert members(at=at, membership="join") == {alice.user_id: "join", bob.user_id: "join"}
    expect_error(alice.api.get(f"{V3}/rooms/{q(room_id)}/members", params={"membership": "joined"}), 400)
    expect_error(alice.api.get(f"{V3}/rooms/{q(room_id)}/members", params={"at": "garbage"}), 400)
    joined = alice.api.get(f"{V3}/rooms/{q(room_id)}/joined_members").json()["joined"]
    assert set(joined) == {alice.user_id, carol.user_id}
    assert joined[carol.user_id]["display_name"] == carol.localpart
    # bob, who left, sees the members as they were when he left, and no later.
    bobs = {e["state_key"]: e["content"]["membership"] for e in bob.api.get(f"{V3}/rooms/{q(room_id)}/members").json()["chunk"]}
    assert bobs == {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "join", dave.user_id: "invite"}
    bobs_now = bob.api.get(f"{V3}/rooms/{q(room_id)}/members", params={"at": f"s{10**12}"}).json()["chunk"]
    assert {e["state_key"] for e in bobs_now} == set(bobs)


def test_profile_change_updates_every_joined_room(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    rooms = [create_room(alice, preset="public_chat") for _ in range(2)]
    left_room = create_room(bob, preset="public_chat")
    join(alice, left_room)
    leave(alice, left_room)
    for room_id in rooms:
        join(bob, room_id)
    assert alice.api.put(f"{V3}/profile/{q(alice.user_id)}/displayname", json={"displayname": "Alice A."}).status_code == 200
    assert alice.api.put(f"{V3}/profile/{q(alice.user_id)}/avatar_url", json={"avatar_url": "mxc://x/y"}).status_code == 200
    for room_id in rooms:
        member = state_of(bob, room_id)[("m.room.member", alice.user_id)]
        assert member["content"] == {"membership": "join", "displayname": "Alice A.", "avatar_url": "mxc://x/y"}
        timeline = [e for e in all_messages(bob, room_id) if e["type"] == "m.room.member" and e["state_key"] == alice.user_id]
        assert [e["content"].get("displayname") for e in timeline][-2:] == ["Alice A.", "Alice A."]
        assert timeline[-1]["unsigned"]["prev_content"]["displayname"] == "Alice A."
        joined = bob.api.get(f"{V3}/rooms/{q(room_id)}/joined_members").json()["joined"]
        assert joined[alice.user_id] == {"display_name": "Alice A.", "avatar_url": "mxc://x/y"}
    # The room alice left keeps her leave.
    assert state_of(bob, left_room)[("m.room.member", alice.user_id)]["content"]["membership"] == "leave"
    # Clearing the display name clears it in the rooms too.
    alice.api.put(f"{V3}/profile/{q(alice.user_id)}/displayname", json={"displayname": None})
    for room_id in rooms:
        assert "displayname" not in state_of(bob, room_id)[("m.room.member", alice.user_id)]["content"]


def test_invite_edge_cases(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice)
    expect_error(invite(alice, room_id, f"@nobody{secrets.token_hex(4)}:{server.server_name}"), 404, "M_NOT_FOUND")
    expect_error(invite(alice, room_id, "not-a-user-id"), 400)
    invite_ok(alice, room_id, bob)
    join(bob, room_id)
    expect_error(invite(alice, room_id, bob), 403, "M_FORBIDDEN")
    # Bob (power 0) may invite in a private_chat room (invite level 0).
    carol = new_user()
    invite_ok(bob, room_id, carol)
    # Rejecting an invite is leaving.
    leave(carol, room_id)
    assert _membership(alice, room_id, carol.user_id) == "leave"


# --- createRoom ------------------------------------------------------------------------


def _timeline(user: User, room_id: str) -> list[dict[str, Any]]:
    return all_messages(user, room_id)


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_create_room_initial_events_in_spec_order(version: str, server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    alias_name = "order" + secrets.token_hex(4)
    response = alice.api.post(
        f"{V3}/createRoom",
        json={
            "room_version": version,
            "preset": "private_chat",
            "room_alias_name": alias_name,
            "name": "Ordered",
            "topic": "In order",
            "invite": [bob.user_id],
            "is_direct": True,
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "org.example.custom", "state_key": "k", "content": {"v": 1}},
                {"type": "m.room.name", "content": {"name": "overridden by name"}},
            ],
            "creation_content": {"m.federate": False, "room_version": "1"},
            "power_level_content_override": {"events_default": 10},
        },
    )
    assert response.status_code == 200, response.text
    room_id = response.json()["room_id"]
    alias = f"#{alias_name}:{server.server_name}"
    assert response.json()["room_alias"] == alias
    events = [(e["type"], e.get("state_key")) for e in _timeline(alice, room_id)]
    assert events == [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.history_visibility", ""),
        ("org.example.custom", "k"),
        ("m.room.name", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", bob.user_id),
    ]
    state = state_of(alice, room_id)
    create = state[("m.room.create", "")]["content"]
    assert create["room_version"] == version and create["m.federate"] is False
    if version == "10":
        assert create["creator"] == alice.user_id
    else:
        assert "creator" not in create
    if version == "12":
        assert room_id.startswith("!") and ":" not in room_id
    assert state[("m.room.name", "")]["content"] == {"name": "Ordered"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "In order"
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "joined"}
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "can_join"}
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": alias}
    power = state[("m.room.power_levels", "")]["content"]
    assert power["events_default"] == 10
    if version == "12":
        assert alice.user_id not in power["users"]
    else:
        assert power["users"][alice.user_id] == 100
    invite_event = state[("m.room.member", bob.user_id)]["content"]
    assert invite_event["membership"] == "invite" and invite_event["is_direct"] is True
    assert alice.api.get(f"{V3}/directory/room/{q(alias)}").json()["room_id"] == room_id


@pytest.mark.parametrize(
    ("preset", "join_rule", "guest_access"),
    [("private_chat", "invite", "can_join"), ("trusted_private_chat", "invite", "can_join"), ("public_chat", "public", "forbidden")],
)
@pytest.mark.parametrize("version", ["11", "12"])
def test_create_room_presets(preset: str, join_rule: str, guest_access: str, version: str, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset=preset, invite=[bob.user_id], room_version=version)
    state = state_of(alice, room_id)
    assert state[("m.room.join_rules", "")]["content"]["join_rule"] == join_rule
    assert state[("m.room.history_visibility", "")]["content"]["history_visibility"] == "shared"
    assert state[("m.room.guest_access", "")]["content"]["guest_access"] == guest_access
    power = state[("m.room.power_levels", "")]["content"]
    create = state[("m.room.create", "")]["content"]
    if preset == "trusted_private_chat":
        # The invitees get the creator's power.
        if version == "12":
            assert create["additional_creators"] == [bob.user_id]
        else:
            assert power["users"][bob.user_id] == 100
    else:
        assert bob.user_id not in power.get("users", {})
        assert "additional_creators" not in create
    # visibility without preset: public -> public_chat, private -> private_chat.
    public = create_room(alice, visibility="public", room_version=version)
    assert state_of(alice, public)[("m.room.join_rules", "")]["content"]["join_rule"] == "public"
    assert alice.api.get(f"{V3}/directory/list/room/{q(public)}").json() == {"visibility": "public"}
    private = create_room(alice, room_version=version)
    assert state_of(alice, private)[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    assert alice.api.get(f"{V3}/directory/list/room/{q(private)}").json() == {"visibility": "private"}


def test_create_room_rejections_change_nothing(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice = new_user()
    taken = "taken" + secrets.token_hex(4)
    create_room(alice, room_alias_name=taken)
    before = _joined_rooms(alice)

    def rejected(body: dict[str, Any], status: int, errcode: str | None) -> None:
        expect_error(alice.api.post(f"{V3}/createRoom", json=body), status, errcode)
        assert _joined_rooms(alice) == before, body

    rejected({"room_alias_name": taken}, 400, "M_ROOM_IN_USE")
    rejected({"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION")
    rejected({"room_version": "1"}, 400, "M_UNSUPPORTED_ROOM_VERSION")
    rejected({"preset": "everyone"}, 400, None)
    rejected({"visibility": "secret"}, 400, None)
    rejected({"room_alias_name": "has:colon"}, 400, None)
    rejected({"room_alias_name": "has space"}, 400, None)
    rejected({"invite": [f"@ghost{secrets.token_hex(4)}:{server.server_name}"]}, 404, "M_NOT_FOUND")
    rejected({"invite": "not a list"}, 400, "M_BAD_JSON")
    rejected({"name": 5}, 400, "M_BAD_JSON")
    rejected({"initial_state": [{"type": "m.room.topic", "content": {"topic": 1.5}}]}, 400, "M_BAD_JSON")
    rejected({"initial_state": [{"type": 5, "content": {}}]}, 400, "M_BAD_JSON")
    rejected({"initial_state": [{"type": "x" * 300, "content": {}}]}, 400, None)
    rejected({"initial_state": [{"type": "m.big", "content": {"v": "x" * 70000}}]}, 413, "M_TOO_LARGE")
    rejected({"creation_content": {"x": 0.5}}, 400, "M_BAD_JSON")
    rejected({"power_level_content_override": {"users_default": "high"}}, 400, "M_BAD_JSON")
    rejected({"power_level_content_override": {"users": {alice.user_id: 1.5}}}, 400, "M_BAD_JSON")
    rejected({"power_level_content_override": {"events": {"m.room.name": "50"}}}, 400, "M_BAD_JSON")
    rejected({"topic": 1}, 400, "M_BAD_JSON")
