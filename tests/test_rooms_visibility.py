"""History visibility on every read path, and ignored users."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import V3, User
from tests.test_rooms_helpers import (
    V1,
    all_messages,
    create_room,
    expect_error,
    invite_ok,
    join,
    leave,
    put_state,
    q,
    send,
    text,
)


def _bodies(user: User, room_id: str) -> list[str]:
    return [e["content"]["body"] for e in all_messages(user, room_id) if e["type"] == "m.room.message"]


def _can_get(user: User, room_id: str, event_id: str) -> bool:
    response = user.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert response.status_code in (200, 403, 404), response.text
    return response.status_code == 200


def _context_ok(user: User, room_id: str, event_id: str) -> bool:
    response = user.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(event_id)}")
    assert response.status_code in (200, 403, 404), response.text
    return response.status_code == 200


def _relations(user: User, room_id: str, event_id: str) -> Any:
    return user.api.get(f"{V1}/rooms/{q(room_id)}/relations/{q(event_id)}")


def _set_visibility(user: User, room_id: str, value: str) -> str:
    return put_state(user, room_id, "m.room.history_visibility", {"history_visibility": value})


def test_shared_late_joiner_sees_all_then_nothing_after_leaving(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="private_chat")
    before = text(alice, room_id, "before bob")
    invite_ok(alice, room_id, bob)
    # Invited to a shared room: not readable yet.
    expect_error(bob.api.get(f"{V3}/rooms/{q(room_id)}/messages", params={"dir": "b"}), 403, "M_FORBIDDEN")
    join(bob, room_id)
    during = text(alice, room_id, "while bob is here")
    reaction_target = during
    send(alice, room_id, {"m.relates_to": {"rel_type": "m.annotation", "event_id": reaction_target, "key": "👍"}}, "m.reaction")
    assert _bodies(bob, room_id) == ["before bob", "while bob is here"]
    assert _can_get(bob, room_id, before)
    leave(bob, room_id)
    after = text(alice, room_id, "after bob left")
    send(alice, room_id, {"m.relates_to": {"rel_type": "m.annotation", "event_id": before, "key": "x"}}, "m.reaction")
    put_state(alice, room_id, "m.room.topic", {"topic": "secret new topic"})

    # messages, event, context, relations: nothing after leaving.
    assert _bodies(bob, room_id) == ["before bob", "while bob is here"]
    backwards = [e["content"].get("body") for e in all_messages(bob, room_id, direction="b") if e["type"] == "m.room.message"]
    assert backwards == ["while bob is here", "before bob"]
    assert _can_get(bob, room_id, before) and _can_get(bob, room_id, during)
    assert not _can_get(bob, room_id, after)
    assert not _context_ok(bob, room_id, after)
    context = bob.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(during)}", params={"limit": 20}).json()
    after_ids = [e["event_id"] for e in context["events_after"]]
    assert after not in after_ids
    assert _relations(bob, room_id, after).status_code in (403, 404)
    relations = _relations(bob, room_id, before).json()["chunk"]
    assert relations == []  # the only reaction to `before` came after bob left
    assert [e["content"]["m.relates_to"]["key"] for e in _relations(bob, room_id, during).json()["chunk"]] == ["👍"]
    # state and members: as they were when bob left.
    state = {(e["type"], e["state_key"]): e for e in bob.api.get(f"{V3}/rooms/{q(room_id)}/state").json()}
    assert ("m.room.topic", "") not in state
    expect_error(bob.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.topic"), 404, "M_NOT_FOUND")
    members = bob.api.get(f"{V3}/rooms/{q(room_id)}/members").json()["chunk"]
    assert {(m["state_key"], m["content"]["membership"]) for m in members} == {
        (alice.user_id, "join"),
        (bob.user_id, "leave"),
    }
    # The leave itself is bob's own membership event: visible to him.
    own = [e for e in all_messages(bob, room_id) if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert [e["content"]["membership"] for e in own] == ["invite", "join", "leave"]
    expect_error(bob.api.get(f"{V3}/rooms/{q(room_id)}/joined_members"), 403, "M_FORBIDDEN")


def test_non_member_is_forbidden_everywhere(new_user: Callable[..., User]) -> None:
    alice, eve = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    event_id = text(alice, room_id, "members only")
    for response in (
        eve.api.get(f"{V3}/rooms/{q(room_id)}/messages", params={"dir": "b"}),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}"),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(event_id)}"),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/state"),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.name"),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/members"),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/joined_members"),
        eve.api.get(f"{V3}/rooms/{q(room_id)}/aliases"),
        _relations(eve, room_id, event_id),
        eve.api.get(f"{V1}/rooms/{q(room_id)}/threads"),
    ):
        expect_error(response, 403, "M_FORBIDDEN")


def test_joined_visibility(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="private_chat")
    hv_event = _set_visibility(alice, room_id, "joined")
    text(alice, room_id, "j1 before invite")
    invite_ok(alice, room_id, bob)
    text(alice, room_id, "j2 while invited")
    join(bob, room_id)
    j3 = text(alice, room_id, "j3 after join")
    assert _bodies(bob, room_id) == ["j3 after join"]
    served = all_messages(bob, room_id)
    own_join = [e for e in served if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert [e["content"]["membership"] for e in own_join][-1:] == ["join"]
    # The change to `joined` was made while the room was `shared`: bob, who joined
    # later, may see it (visibility before *or* after a history_visibility event).
    assert _can_get(bob, room_id, hv_event)
    assert _can_get(bob, room_id, j3)
    leave(bob, room_id)
    text(alice, room_id, "j4 after leave")
    assert _bodies(bob, room_id) == ["j3 after join"]


def test_invited_visibility(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="private_chat")
    _set_visibility(alice, room_id, "invited")
    i1 = text(alice, room_id, "i1 before invite")
    invite_ok(alice, room_id, bob)
    text(alice, room_id, "i2 while invited")
    # Invited users of an `invited` room may read from their invite on.
    assert _bodies(bob, room_id) == ["i2 while invited"]
    join(bob, room_id)
    text(alice, room_id, "i3 after join")
    assert _bodies(bob, room_id) == ["i2 while invited", "i3 after join"]
    assert not _can_get(bob, room_id, i1)
    assert not _context_ok(bob, room_id, i1)


def test_world_readable_and_switching_away(new_user: Callable[..., User]) -> None:
    alice, eve = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    _set_visibility(alice, room_id, "world_readable")
    open_event = text(alice, room_id, "for everyone")
    # A non-member reads messages, events, context, state, members and relations.
    assert _bodies(eve, room_id) == ["for everyone"]
    assert _can_get(eve, room_id, open_event)
    assert _context_ok(eve, room_id, open_event)
    assert eve.api.get(f"{V3}/rooms/{q(room_id)}/state").status_code == 200
    assert eve.api.get(f"{V3}/rooms/{q(room_id)}/members").status_code == 200
    assert _relations(eve, room_id, open_event).status_code == 200
    hv_event = _set_visibility(alice, room_id, "joined")
    closed = text(alice, room_id, "members only now")
    # Once closed, the room is not readable by non-members at all (whether a room is
    # readable goes by its current setting).
    expect_error(eve.api.get(f"{V3}/rooms/{q(room_id)}/messages", params={"dir": "b"}), 403, "M_FORBIDDEN")
    expect_error(eve.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(hv_event)}"), 403, "M_FORBIDDEN")
    expect_error(eve.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(closed)}"), 403, "M_FORBIDDEN")
    # A user joining now sees the world_readable past and the event that closed it
    # (allowed by the setting before it), and what came after their join.
    join(eve, room_id)
    after_join = text(alice, room_id, "welcome eve")
    assert _can_get(eve, room_id, open_event)
    assert _can_get(eve, room_id, hv_event)
    assert not _can_get(eve, room_id, closed)
    assert _bodies(eve, room_id) == ["for everyone", "welcome eve"]
    assert _can_get(eve, room_id, after_join)


def test_closing_then_opening_world_readable(new_user: Callable[..., User]) -> None:
    alice, eve = new_user(), new_user()
    room_id = create_room(alice, preset="private_chat")
    _set_visibility(alice, room_id, "joined")
    hidden = text(alice, room_id, "hidden")
    opening = _set_visibility(alice, room_id, "world_readable")
    visible = text(alice, room_id, "visible")
    assert _bodies(eve, room_id) == ["visible"]
    assert _can_get(eve, room_id, opening)
    assert not _can_get(eve, room_id, hidden)
    assert _can_get(eve, room_id, visible)


# --- ignored users --------------------------------------------------------------------


def test_ignored_users_disappear_for_the_ignorer_only(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    join(carol, room_id)
    from_carol = text(carol, room_id, "carol speaks")
    from_alice = text(alice, room_id, "alice speaks")
    thread_reply = send(
        carol, room_id, {"msgtype": "m.text", "body": "carol in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": from_alice}}
    )
    response = bob.api.put(
        f"{V3}/user/{q(bob.user_id)}/account_data/m.ignored_user_list", json={"ignored_users": {carol.user_id: {}}}
    )
    assert response.status_code == 200, response.text
    assert "carol speaks" not in _bodies(bob, room_id)
    assert "alice speaks" in _bodies(bob, room_id)
    assert not _can_get(bob, room_id, from_carol)
    assert not _context_ok(bob, room_id, from_carol)
    context = bob.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(from_alice)}", params={"limit": 10}).json()
    assert from_carol not in [e["event_id"] for e in context["events_before"]]
    assert thread_reply not in [e["event_id"] for e in _relations(bob, room_id, from_alice).json()["chunk"]]
    # Others still see carol.
    assert "carol speaks" in _bodies(alice, room_id)
    assert _can_get(alice, room_id, from_carol)
    assert thread_reply in [e["event_id"] for e in _relations(alice, room_id, from_alice).json()["chunk"]]
    # Un-ignoring brings them back.
    bob.api.put(f"{V3}/user/{q(bob.user_id)}/account_data/m.ignored_user_list", json={"ignored_users": {}})
    assert "carol speaks" in _bodies(bob, room_id)
