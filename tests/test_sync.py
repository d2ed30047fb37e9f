"""/sync over HTTP: initial and incremental syncs, long-poll waking, tokens, filters,
state, invites and leaves, lazy-loading, and surviving a restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import V3, Api, User, register_user
from tests.server import ServerProcess


def sync(user: User, since: str | None = None, *, skip_spec: bool = False, **params: Any) -> dict[str, Any]:
    query = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in params.items()}
    if since is not None:
        query["since"] = since
    # event_fields trims events below what the spec's schema requires: by request.
    headers = {"x-test-skip-spec": "1"} if skip_spec else {}
    response = user.api.get(f"{V3}/sync", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def create_room(user: User, **body: Any) -> str:
    response = user.api.post(f"{V3}/createRoom", json=body)
    assert response.status_code == 200, response.text
    return response.json()["room_id"]


def send(user: User, room_id: str, body: str, txn: str | None = None) -> str:
    txn = txn or f"t{time.monotonic_ns()}"
    response = user.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/{txn}", json={"msgtype": "m.text", "body": body})
    assert response.status_code == 200, response.text
    return response.json()["event_id"]


def join(user: User, room_id: str) -> None:
    response = user.api.post(f"{V3}/rooms/{room_id}/join", json={})
    assert response.status_code == 200, response.text


def shared_room(a: User, b: User, **body: Any) -> str:
    room_id = create_room(a, invite=[b.user_id], **body)
    join(b, room_id)
    return room_id


def timeline(response: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = response["rooms"]["join"].get(room_id)
    return room["timeline"]["events"] if room else []


def bodies(response: dict[str, Any], room_id: str) -> list[str]:
    return [e["content"]["body"] for e in timeline(response, room_id) if e["type"] == "m.room.message"]


def test_initial_then_incremental(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob, name="Chat")
    send(alice, room_id, "one")
    first = sync(bob)
    room = first["rooms"]["join"][room_id]
    assert bodies(first, room_id) == ["one"]
    state_types = {e["type"] for e in room["state"]["events"]} | {e["type"] for e in room["timeline"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    assert room["summary"]["m.joined_member_count"] == 2
    assert room["summary"]["m.heroes"] == [alice.user_id]
    assert all("room_id" not in e for e in room["timeline"]["events"])

    send(alice, room_id, "two")
    second = sync(bob, first["next_batch"])
    assert bodies(second, room_id) == ["two"]
    assert second["rooms"]["join"][room_id]["timeline"]["limited"] is False
    assert second["rooms"]["join"][room_id]["state"]["events"] == []
    assert second["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 2
    third = sync(bob, second["next_batch"])
    assert room_id not in third["rooms"]["join"]


def test_long_poll_wakes_on_message_and_only_for_members(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = shared_room(alice, bob)
    bob_token = sync(bob)["next_batch"]
    carol_token = sync(carol)["next_batch"]
    results: dict[str, Any] = {}

    def wait(name: str, user: User, token: str, timeout: int) -> None:
        started = time.monotonic()
        results[name] = (sync(user, token, timeout=timeout), time.monotonic() - started)

    bob_thread = threading.Thread(target=wait, args=("bob", bob, bob_token, 20000))
    carol_thread = threading.Thread(target=wait, args=("carol", carol, carol_token, 1500))
    bob_thread.start()
    carol_thread.start()
    time.sleep(0.3)
    send(alice, room_id, "wake up")
    bob_thread.join(15)
    carol_thread.join(15)
    response, elapsed = results["bob"]
    assert bodies(response, room_id) == ["wake up"]
    assert elapsed < 10  # the 20 s timeout did not run out
    carol_response, _ = results["carol"]
    assert carol_response["rooms"]["join"] == {}


def test_each_event_delivered_once(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    token = sync(bob)["next_batch"]
    sent: list[str] = []
    seen: list[str] = []

    def sender() -> None:
        for i in range(40):
            sent.append(send(alice, room_id, f"m{i}"))

    thread = threading.Thread(target=sender)
    thread.start()
    deadline = time.monotonic() + 30
    while (thread.is_alive() or len(seen) < 40) and time.monotonic() < deadline:
        response = sync(bob, token, timeout=2000, filter={"room": {"timeline": {"limit": 100}}})
        seen.extend(e["event_id"] for e in timeline(response, room_id) if e["type"] == "m.room.message")
        token = response["next_batch"]
    thread.join()
    assert seen == sent


def test_limited_timeline_and_prev_batch_with_messages(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    token = sync(bob)["next_batch"]
    sent = [send(alice, room_id, f"m{i}") for i in range(8)]
    alice.api.put(f"{V3}/rooms/{room_id}/state/m.room.topic", json={"topic": "in the gap"})
    sent.append(send(alice, room_id, "last"))
    response = sync(bob, token, filter={"room": {"timeline": {"limit": 3}}})
    room = response["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert [e["event_id"] for e in room["timeline"]["events"]][-1] == sent[-1]
    assert len(room["timeline"]["events"]) == 3
    page = bob.api.get(
        f"{V3}/rooms/{room_id}/messages", params={"from": room["timeline"]["prev_batch"], "dir": "b", "limit": 5}
    ).json()
    earlier = [e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message"]
    # The timeline is m7, the topic, "last"; before it come m6 back to m2.
    assert earlier == list(reversed(sent[2:7]))


def test_state_in_gap_when_limited(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    token = sync(bob)["next_batch"]
    alice.api.put(f"{V3}/rooms/{room_id}/state/m.room.topic", json={"topic": "gap topic"})
    for i in range(5):
        send(alice, room_id, f"m{i}")
    room = sync(bob, token, filter={"room": {"timeline": {"limit": 2}}})["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    topics = [e["content"] for e in room["state"]["events"] if e["type"] == "m.room.topic"]
    assert topics == [{"topic": "gap topic"}]
    # full_state gives everything, with a fresh timeline bounded by the filter.
    full = sync(bob, token, full_state="true", filter={"room": {"timeline": {"limit": 2}}})["rooms"]["join"][room_id]
    assert {"m.room.create", "m.room.topic", "m.room.power_levels"} <= {e["type"] for e in full["state"]["events"]}


def test_bad_tokens_and_filters_are_400(user: User) -> None:
    token = sync(user)["next_batch"]
    for bad in ("garbage", "s1", "s99999999_0_0_0_0_0_0", token + "_1", "s-1_0_0_0_0_0_0"):
        response = user.api.get(f"{V3}/sync", params={"since": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["errcode"].startswith("M_")
    for bad_filter in ("{not json", "12345", '{"room": {"timeline": {"limit": "ten"}}}', '{"event_format": "x"}', "abc"):
        response = user.api.get(f"{V3}/sync", params={"filter": bad_filter})
        assert response.status_code == 400, (bad_filter, response.text)
    response = user.api.post(f"{V3}/user/{user.user_id}/filter", json={"room": {"rooms": "not a list"}})
    assert response.status_code == 400
    assert user.api.get(f"{V3}/sync", params={"timeout": "soon"}).status_code == 400
    assert user.api.get(f"{V3}/sync", params={"set_presence": "busy"}).status_code == 400


def test_stored_filter_round_trip_and_applied(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    definition = {
        "event_fields": ["type", "content.body", "event_id"],
        "room": {"timeline": {"limit": 5, "types": ["m.room.message"]}, "state": {"types": ["m.room.name"]}},
        "presence": {"types": []},
    }
    created = bob.api.post(f"{V3}/user/{bob.user_id}/filter", json=definition)
    assert created.status_code == 200
    filter_id = created.json()["filter_id"]
    assert bob.api.get(f"{V3}/user/{bob.user_id}/filter/{filter_id}").json() == definition
    assert bob.api.get(f"{V3}/user/{bob.user_id}/filter/999").status_code == 404
    assert alice.api.get(f"{V3}/user/{bob.user_id}/filter/{filter_id}").status_code == 403
    room_id = shared_room(alice, bob, name="Filtered")
    send(alice, room_id, "hello")
    response = sync(bob, filter=filter_id, skip_spec=True)
    room = response["rooms"]["join"][room_id]
    assert [set(e) for e in room["timeline"]["events"]] == [{"type", "content", "event_id"}]
    assert room["timeline"]["events"][0]["content"] == {"body": "hello"}
    assert {e["type"] for e in room["state"]["events"]} <= {"m.room.name"}
    assert response["presence"]["events"] == []
    # Rooms can be excluded.
    excluded = sync(bob, filter={"room": {"not_rooms": [room_id]}})
    assert room_id not in excluded["rooms"]["join"]


def test_invite_leave_and_include_leave(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    token = sync(bob)["next_batch"]
    room_id = create_room(
        alice,
        name="Secret",
        invite=[bob.user_id],
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )
    response = sync(bob, token)
    invite = response["rooms"]["invite"][room_id]["invite_state"]["events"]
    kinds = {(e["type"], e["state_key"]) for e in invite}
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.join_rules", ""), ("m.room.encryption", "")} <= kinds
    assert ("m.room.member", alice.user_id) in kinds
    assert ("m.room.member", bob.user_id) in kinds
    assert all(set(e) == {"type", "state_key", "content", "sender"} for e in invite)
    token = response["next_batch"]
    join(bob, room_id)
    joined = sync(bob, token)
    assert room_id in joined["rooms"]["join"] and room_id not in joined["rooms"]["invite"]
    token = joined["next_batch"]
    send(alice, room_id, "before kick")
    assert alice.api.post(f"{V3}/rooms/{room_id}/kick", json={"user_id": bob.user_id}).status_code == 200
    send(alice, room_id, "after kick")
    left = sync(bob, token)
    assert room_id in left["rooms"]["leave"]
    events = left["rooms"]["leave"][room_id]["timeline"]["events"]
    assert [e.get("content", {}).get("body") for e in events if e["type"] == "m.room.message"] == ["before kick"]
    assert events[-1]["type"] == "m.room.member" and events[-1]["content"]["membership"] == "leave"
    assert room_id not in sync(bob)["rooms"]["leave"]
    assert room_id in sync(bob, filter={"room": {"include_leave": True}})["rooms"]["leave"]


def test_lazy_loading_members(new_user: Callable[..., User]) -> None:
    users = [new_user() for _ in range(4)]
    alice = users[0]
    room_id = create_room(alice, preset="public_chat")
    for other in users[1:]:
        join(other, room_id)
    send(users[1], room_id, "from one")
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
    room = sync(users[3], filter=lazy)["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {users[1].user_id, users[3].user_id}
    room = sync(users[3])["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] + room["timeline"]["events"] if e["type"] == "m.room.member"}
    assert members == {u.user_id for u in users}


def test_ignored_users_are_filtered(new_user: Callable[..., User]) -> None:
    alice, bob, mallory = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    join(mallory, room_id)
    ignore = {"ignored_users": {mallory.user_id: {}}}
    assert bob.api.put(f"{V3}/user/{bob.user_id}/account_data/m.ignored_user_list", json=ignore).status_code == 200
    token = sync(bob)["next_batch"]
    send(mallory, room_id, "spam")
    send(alice, room_id, "real")
    assert bodies(sync(bob, token), room_id) == ["real"]
    # Invites from ignored users are dropped too.
    other = create_room(mallory, invite=[bob.user_id])
    assert other not in sync(bob, token)["rooms"]["invite"]


def test_history_visibility_joined_hides_earlier_events(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}],
    )
    send(alice, room_id, "before bob")
    join(bob, room_id)
    send(alice, room_id, "after bob")
    assert bodies(sync(bob), room_id) == ["after bob"]


def test_unread_count_follows_read_receipt(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    send(alice, room_id, "a")
    second = send(alice, room_id, "b")
    send(alice, room_id, "c")
    room = sync(bob)["rooms"]["join"][room_id]
    assert room["unread_notifications"] == {"notification_count": 3, "highlight_count": 0}
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{second}", json={}).status_code == 200
    room = sync(bob)["rooms"]["join"][room_id]
    assert room["unread_notifications"]["notification_count"] == 1


def test_restart_keeps_tokens_valid_and_nothing_is_missed(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    alice = register_user(server.base_url)
    bob = register_user(server.base_url)
    room_id = shared_room(alice, bob)
    token = sync(bob)["next_batch"]
    send(alice, room_id, "before restart")
    server.stop()
    server.start()
    alice.api = Api(server.base_url, alice.access_token)
    bob.api = Api(server.base_url, bob.access_token)
    send(alice, room_id, "after restart")
    response = sync(bob, token)
    assert bodies(response, room_id) == ["before restart", "after restart"]
    assert bodies(sync(bob, response["next_batch"]), room_id) == []


def test_shutdown_does_not_wait_for_long_polls(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    user = register_user(server.base_url)
    token = sync(user)["next_batch"]
    thread = threading.Thread(target=lambda: user.api.get(f"{V3}/sync", params={"since": token, "timeout": 60000}))
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 8
    thread.join(5)


@pytest.mark.parametrize("use_state_after", [True])
def test_use_state_after(new_user: Callable[..., User], use_state_after: bool) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    token = sync(bob)["next_batch"]
    alice.api.put(f"{V3}/rooms/{room_id}/state/m.room.topic", json={"topic": "new"})
    room = sync(bob, token, use_state_after="true")["rooms"]["join"][room_id]
    assert "state" not in room
    assert [e["content"] for e in room["state_after"]["events"] if e["type"] == "m.room.topic"] == [{"topic": "new"}]


def test_unread_count_counts_on_incrementally(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    first = send(alice, room_id, "a")
    response = sync(bob)
    assert response["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 1
    token = response["next_batch"]
    send(alice, room_id, "b")
    send(alice, room_id, "c")
    response = sync(bob, token)
    assert response["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 3
    token = response["next_batch"]
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{first}", json={}).status_code == 200
    response = sync(bob, token)
    assert response["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 2
    token = response["next_batch"]
    send(bob, room_id, "my own reply reads everything")
    send(alice, room_id, "d")
    response = sync(bob, token)
    assert response["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 1
