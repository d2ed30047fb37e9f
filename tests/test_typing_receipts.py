"""The ephemeral and per-user streams in /sync: typing, receipts, read markers,
account data and tags, presence and to-device messages, each visible to the right
users only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import V3, User, register_user
from tests.server import ServerProcess
from tests.test_sync import create_room, join, send, shared_room, sync


def ephemeral(response: dict[str, Any], room_id: str, kind: str) -> list[dict[str, Any]]:
    room = response["rooms"]["join"].get(room_id)
    return [e for e in room["ephemeral"]["events"] if e["type"] == kind] if room else []


def test_typing_reaches_room_members_and_expires(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = shared_room(alice, bob)
    bob_token = sync(bob)["next_batch"]
    carol_token = sync(carol)["next_batch"]
    path = f"{V3}/rooms/{room_id}/typing/{alice.user_id}"
    assert alice.api.put(path, json={"typing": True, "timeout": 1000}).status_code == 200
    response = sync(bob, bob_token, timeout=5000)
    assert ephemeral(response, room_id, "m.typing") == [{"type": "m.typing", "content": {"user_ids": [alice.user_id]}}]
    assert sync(carol, carol_token)["rooms"]["join"] == {}
    # The timeout runs out: a waiting sync is told the typing stopped.
    started = time.monotonic()
    stopped = sync(bob, response["next_batch"], timeout=10000)
    assert ephemeral(stopped, room_id, "m.typing") == [{"type": "m.typing", "content": {"user_ids": []}}]
    assert time.monotonic() - started < 8
    # Only for yourself, only in rooms you are in.
    assert bob.api.put(path, json={"typing": True}).status_code == 403
    assert carol.api.put(f"{V3}/rooms/{room_id}/typing/{carol.user_id}", json={"typing": True}).status_code == 403
    assert alice.api.put(path, json={"typing": "yes"}).status_code == 400


def test_receipts_public_private_and_threaded(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    event_id = send(alice, room_id, "read me")
    carol_token = sync(carol)["next_batch"]
    alice_token = sync(alice)["next_batch"]
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}", json={}).status_code == 200
    receipts = ephemeral(sync(alice, alice_token), room_id, "m.receipt")
    assert list(receipts[0]["content"][event_id]["m.read"]) == [bob.user_id]
    assert "ts" in receipts[0]["content"][event_id]["m.read"][bob.user_id]
    assert sync(carol, carol_token)["rooms"]["join"] == {}

    alice_token = sync(alice)["next_batch"]
    bob_token = sync(bob)["next_batch"]
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read.private/{event_id}", json={}).status_code == 200
    assert ephemeral(sync(alice, alice_token), room_id, "m.receipt") == []
    mine = ephemeral(sync(bob, bob_token), room_id, "m.receipt")
    assert bob.user_id in mine[0]["content"][event_id]["m.read.private"]

    alice_token = sync(alice)["next_batch"]
    response = bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}", json={"thread_id": "main"})
    assert response.status_code == 200
    threaded = ephemeral(sync(alice, alice_token), room_id, "m.receipt")
    assert threaded[0]["content"][event_id]["m.read"][bob.user_id]["thread_id"] == "main"

    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/$nope", json={}).status_code == 404
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.bogus/{event_id}", json={}).status_code == 400
    assert carol.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}", json={}).status_code == 403


def test_read_markers_set_fully_read_and_receipt(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    event_id = send(alice, room_id, "marker")
    token = sync(bob)["next_batch"]
    response = bob.api.post(f"{V3}/rooms/{room_id}/read_markers", json={"m.fully_read": event_id, "m.read": event_id})
    assert response.status_code == 200
    room = sync(bob, token)["rooms"]["join"][room_id]
    assert {"type": "m.fully_read", "content": {"event_id": event_id}} in room["account_data"]["events"]
    assert room["unread_notifications"]["notification_count"] == 0
    fully_read = bob.api.get(f"{V3}/user/{bob.user_id}/rooms/{room_id}/account_data/m.fully_read")
    assert fully_read.json() == {"event_id": event_id}


def test_account_data_and_tags_reach_only_their_owner(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    alice_token = sync(alice)["next_batch"]
    bob_token = sync(bob)["next_batch"]
    direct = {bob.user_id: [room_id]}
    assert alice.api.put(f"{V3}/user/{alice.user_id}/account_data/m.direct", json=direct).status_code == 200
    tag = f"{V3}/user/{alice.user_id}/rooms/{room_id}/tags/u.work"
    assert alice.api.put(tag, json={"order": 0.5}).status_code == 200
    response = sync(alice, alice_token, timeout=5000)
    assert {"type": "m.direct", "content": direct} in response["account_data"]["events"]
    room_data = response["rooms"]["join"][room_id]["account_data"]["events"]
    assert {"type": "m.tag", "content": {"tags": {"u.work": {"order": 0.5}}}} in room_data
    assert alice.api.get(f"{V3}/user/{alice.user_id}/rooms/{room_id}/tags").json() == {"tags": {"u.work": {"order": 0.5}}}
    assert alice.api.delete(tag).status_code == 200
    assert alice.api.get(f"{V3}/user/{alice.user_id}/rooms/{room_id}/tags").json() == {"tags": {}}
    assert bob.api.get(f"{V3}/user/{alice.user_id}/rooms/{room_id}/tags").status_code == 403
    bob_response = sync(bob, bob_token)
    assert bob_response["account_data"]["events"] == [] and bob_response["rooms"]["join"] == {}
    # Initial sync carries the newest account data.
    initial = sync(alice)
    assert {"type": "m.direct", "content": direct} in initial["account_data"]["events"]


def test_account_data_wakes_a_waiting_sync(user: User) -> None:
    token = sync(user)["next_batch"]
    result: dict[str, Any] = {}

    def wait() -> None:
        result["response"] = sync(user, token, timeout=20000)

    thread = threading.Thread(target=wait)
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    user.api.put(f"{V3}/user/{user.user_id}/account_data/org.example.x", json={"a": 1})
    thread.join(15)
    assert time.monotonic() - started < 10
    assert result["response"]["account_data"]["events"] == [{"type": "org.example.x", "content": {"a": 1}}]


def test_presence_shared_with_room_members_only(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    shared_room(alice, bob)
    bob_token = sync(bob, set_presence="offline")["next_batch"]
    carol_token = sync(carol, set_presence="offline")["next_batch"]
    status = {"presence": "unavailable", "status_msg": "lunch"}
    assert alice.api.put(f"{V3}/presence/{alice.user_id}/status", json=status).status_code == 200
    response = sync(bob, bob_token, timeout=5000, set_presence="offline")
    mine = [e for e in response["presence"]["events"] if e["sender"] == alice.user_id]
    assert mine and mine[-1]["content"]["presence"] == "unavailable"
    assert mine[-1]["content"]["status_msg"] == "lunch"
    assert all(e["sender"] != alice.user_id for e in sync(carol, carol_token, set_presence="offline")["presence"]["events"])
    got = bob.api.get(f"{V3}/presence/{alice.user_id}/status").json()
    assert got["presence"] == "unavailable" and got["status_msg"] == "lunch" and "last_active_ago" in got
    assert carol.api.get(f"{V3}/presence/{alice.user_id}/status").status_code == 403
    assert bob.api.put(f"{V3}/presence/{alice.user_id}/status", json=status).status_code == 403
    assert alice.api.put(f"{V3}/presence/{alice.user_id}/status", json={"presence": "busy"}).status_code == 400
    # Syncing marks you online.
    sync(alice)
    assert bob.api.get(f"{V3}/presence/{alice.user_id}/status").json()["presence"] == "online"


def test_presence_set_without_syncing_holds(new_user: Callable[..., User]) -> None:
    """A client that sets presence (or sends events) without syncing, like a bot,
    stays as it said for 30 seconds, as it would on Synapse; the sweep used to count
    only syncs and put such a user offline within 5 seconds."""
    alice, bob = new_user(), new_user()
    shared_room(alice, bob)
    status = {"presence": "online", "status_msg": "a bot at work"}
    assert alice.api.put(f"{V3}/presence/{alice.user_id}/status", json=status).status_code == 200
    # Past the sweep (every 5 s) that used to put alice offline.
    time.sleep(6)
    got = bob.api.get(f"{V3}/presence/{alice.user_id}/status").json()
    assert got["presence"] == "online" and got["status_msg"] == "a bot at work", got


def test_presence_can_be_switched_off(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server({"presence": {"enabled": False}})
    alice = register_user(server.base_url)
    bob = register_user(server.base_url)
    shared_room(alice, bob)
    sync(alice)
    assert alice.api.put(f"{V3}/presence/{alice.user_id}/status", json={"presence": "online"}).status_code == 200
    assert sync(bob)["presence"]["events"] == []
    assert bob.api.get(f"{V3}/presence/{alice.user_id}/status").json()["presence"] == "offline"


def _second_device(server_url: str, user: User) -> tuple[str, Any]:
    from tests.conftest import Api

    with Api(server_url) as api:
        login = api.post(
            f"{V3}/login",
            json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": user.password},
        ).json()
    return login["device_id"], Api(server_url, login["access_token"])


def test_to_device_delivery_idempotency_and_acknowledgement(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    _, second_api = _second_device(server.base_url, bob)
    bob_token = sync(bob)["next_batch"]
    second_token = second_api.get(f"{V3}/sync").json()["next_batch"]
    messages = {"messages": {bob.user_id: {bob.device_id: {"hello": "device"}}}}
    path = f"{V3}/sendToDevice/org.example.ping/txn1"
    assert alice.api.put(path, json=messages).status_code == 200
    assert alice.api.put(path, json=messages).status_code == 200  # same txn: not queued again
    first = sync(bob, bob_token, timeout=5000)
    assert first["to_device"]["events"] == [
        {"type": "org.example.ping", "sender": alice.user_id, "content": {"hello": "device"}}
    ]
    # Not acknowledged yet: the same token gives the same messages again.
    assert sync(bob, bob_token)["to_device"]["events"] == first["to_device"]["events"]
    # Acknowledged by syncing with the next token: gone.
    assert sync(bob, first["next_batch"])["to_device"]["events"] == []
    assert sync(bob, bob_token)["to_device"]["events"] == []
    # The other device got nothing; '*' reaches every device.
    assert second_api.get(f"{V3}/sync", params={"since": second_token}).json()["to_device"]["events"] == []
    star = {"messages": {bob.user_id: {"*": {"to": "all"}}}}
    assert alice.api.put(f"{V3}/sendToDevice/org.example.ping/txn2", json=star).status_code == 200
    assert [e["content"] for e in sync(bob, first["next_batch"])["to_device"]["events"]] == [{"to": "all"}]
    other = second_api.get(f"{V3}/sync", params={"since": second_token}).json()
    assert [e["content"] for e in other["to_device"]["events"]] == [{"to": "all"}]
    assert alice.api.put(f"{V3}/sendToDevice/org.example.ping/txn3", json={"messages": []}).status_code == 400


def test_many_to_device_messages_arrive_in_batches(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    token = sync(bob)["next_batch"]
    for i in range(130):
        body = {"messages": {bob.user_id: {bob.device_id: {"n": i}}}}
        assert alice.api.put(f"{V3}/sendToDevice/org.example.n/b{i}", json=body).status_code == 200
    received: list[int] = []
    for _ in range(5):
        response = sync(bob, token)
        received.extend(e["content"]["n"] for e in response["to_device"]["events"])
        token = response["next_batch"]
    assert received == list(range(130))
