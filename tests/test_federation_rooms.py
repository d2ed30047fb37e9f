"""Rooms shared with a real Synapse: its users join our rooms, and messages flow both ways."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import V3, User, register_user
from tests.server import ServerProcess
from tests.synapse import SynapseProcess


class SynapseUser:
    def __init__(self, synapse: SynapseProcess) -> None:
        registered = synapse.register()
        self.user_id: str = registered["user_id"]
        self.http = httpx.Client(
            base_url=synapse.base_url, headers={"Authorization": f"Bearer {registered['access_token']}"}, timeout=60
        )

    def messages(self, room_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{V3}/rooms/{room_id}/messages", params={"dir": "b", "limit": 100})
        response.raise_for_status()
        return list(reversed(response.json()["chunk"]))


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def our_messages(user: User, room_id: str) -> list[dict[str, Any]]:
    response = user.api.get(f"{V3}/rooms/{room_id}/messages", params={"dir": "b", "limit": 100})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["chunk"]))


def test_synapse_user_joins_our_room_and_chats(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat", "name": "Federated"}).json()["room_id"]
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/t1", json={"msgtype": "m.text", "body": "before you came"})
    bob = SynapseUser(synapse)
    joined = bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-4000:])

    # Bob's join reached us, and he sees the history from before his join.
    wait_for(
        lambda: bob.user_id in alice.api.get(f"{V3}/rooms/{room_id}/joined_members").json()["joined"],
        what="bob's membership on our server",
    )
    assert "before you came" in bodies(bob.messages(room_id))

    # Ours -> Synapse.
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/t2", json={"msgtype": "m.text", "body": "hello synapse"})
    wait_for(lambda: "hello synapse" in bodies(bob.messages(room_id)), what="our message on Synapse")

    # Synapse -> ours.
    sent = bob.http.put(f"{V3}/rooms/{room_id}/send/m.room.message/s1", json={"msgtype": "m.text", "body": "hello ours"})
    assert sent.status_code == 200, sent.text
    wait_for(lambda: "hello ours" in bodies(our_messages(alice, room_id)), what="Synapse's message on our server")

    # State changes flow too, and both servers hold the same events in the same order.
    alice.api.put(f"{V3}/rooms/{room_id}/state/m.room.topic", json={"topic": "shared topic"})
    wait_for(
        lambda: bob.http.get(f"{V3}/rooms/{room_id}/state/m.room.topic").json().get("topic") == "shared topic",
        what="topic on Synapse",
    )
    ours_ids = [e["event_id"] for e in our_messages(alice, room_id)]
    theirs_ids = [e["event_id"] for e in bob.messages(room_id)]
    assert ours_ids == theirs_ids


def test_a_server_joining_learns_where_our_members_are(ours: ServerProcess, synapse: SynapseProcess) -> None:
    """Presence goes to other servers on a change; a server that joins later is told
    the current one when it joins (without it, Synapse showed alice offline until she
    next changed)."""
    alice = register_user(ours.base_url)
    status = {"presence": "online", "status_msg": "here before you"}
    assert alice.api.put(f"{V3}/presence/{alice.user_id}/status", json=status).status_code == 200
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    bob = SynapseUser(synapse)
    joined = bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={})
    assert joined.status_code == 200, joined.text

    def seen() -> dict[str, Any]:
        return dict(bob.http.get(f"{V3}/presence/{alice.user_id}/status").json())

    wait_for(lambda: seen().get("presence") == "online", what="alice online at Synapse after its user joined")
    assert seen()["status_msg"] == "here before you"


def test_our_user_joins_a_synapse_room_and_chats(ours: ServerProcess, synapse: SynapseProcess) -> None:
    bob = SynapseUser(synapse)
    created = bob.http.post(f"{V3}/createRoom", json={"preset": "public_chat", "name": "Synapse's room"})
    assert created.status_code == 200, created.text
    room_id = created.json()["room_id"]
    bob.http.put(f"{V3}/rooms/{room_id}/send/m.room.message/b1", json={"msgtype": "m.text", "body": "welcome"})
    alice = register_user(ours.base_url)
    joined = alice.api.post(f"{V3}/join/{room_id}", params={"via": synapse.server_name}, json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-4000:])
    assert joined.json()["room_id"] == room_id
    assert room_id in alice.api.get(f"{V3}/joined_rooms").json()["joined_rooms"]
    # We hold the room's state: its name, and both members.
    assert alice.api.get(f"{V3}/rooms/{room_id}/state/m.room.name").json() == {"name": "Synapse's room"}
    wait_for(
        lambda: alice.user_id in bob.http.get(f"{V3}/rooms/{room_id}/joined_members").json().get("joined", {}),
        what="our join on Synapse",
    )
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/a1", json={"msgtype": "m.text", "body": "hi from ours"})
    wait_for(lambda: "hi from ours" in bodies(bob.messages(room_id)), what="our message on Synapse")
    bob.http.put(f"{V3}/rooms/{room_id}/send/m.room.message/b2", json={"msgtype": "m.text", "body": "hi back"})
    wait_for(lambda: "hi back" in bodies(our_messages(alice, room_id)), what="Synapse's message on our server")


def test_synapse_catches_up_after_being_down(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    bob = SynapseUser(synapse)
    assert bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={}).status_code == 200
    wait_for(
        lambda: bob.user_id in alice.api.get(f"{V3}/rooms/{room_id}/joined_members").json()["joined"],
        what="bob's membership",
    )
    synapse.stop()
    try:
        for i in range(5):
            sent = alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/down{i}", json={"msgtype": "m.text", "body": f"missed {i}"})
            assert sent.status_code == 200
    finally:
        synapse.start()
    wait_for(
        lambda: [b for b in bodies(bob.messages(room_id)) if b.startswith("missed")] == [f"missed {i}" for i in range(5)],
        timeout=60,
        what="Synapse to receive what it missed, in order",
    )


def test_invites_both_ways(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    bob = SynapseUser(synapse)
    # Ours invites Synapse's user into our room; Synapse countersigns, bob accepts.
    room_id = alice.api.post(f"{V3}/createRoom", json={"invite": [bob.user_id], "is_direct": True}).json()
    assert "room_id" in room_id, (room_id, ours.log()[-3000:])
    room_id = room_id["room_id"]
    joined = bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={})
    assert joined.status_code == 200, joined.text
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/dm1", json={"msgtype": "m.text", "body": "private hello"})
    wait_for(lambda: "private hello" in bodies(bob.messages(room_id)), what="the DM on Synapse")

    # Synapse's user invites ours into a private room; alice accepts with a plain join.
    other = bob.http.post(f"{V3}/createRoom", json={"preset": "private_chat", "invite": [alice.user_id]})
    assert other.status_code == 200, (other.text, ours.log()[-3000:])
    private_id = other.json()["room_id"]
    accepted = alice.api.post(f"{V3}/rooms/{private_id}/join", json={})
    assert accepted.status_code == 200, (accepted.text, ours.log()[-3000:])
    bob.http.put(f"{V3}/rooms/{private_id}/send/m.room.message/p1", json={"msgtype": "m.text", "body": "secret"})
    wait_for(lambda: "secret" in bodies(our_messages(alice, private_id)), what="Synapse's message in the private room")


def test_join_by_remote_alias_both_ways(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    bob = SynapseUser(synapse)
    ours_room = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat", "room_alias_name": "lobby"}).json()
    alias = ours_room["room_alias"]
    resolved = bob.http.get(f"{V3}/directory/room/{quote(alias)}")
    assert resolved.status_code == 200, (resolved.text, ours.log()[-3000:])
    assert resolved.json()["room_id"] == ours_room["room_id"]
    assert bob.http.post(f"{V3}/join/{quote(alias)}", json={}).status_code == 200

    theirs = bob.http.post(f"{V3}/createRoom", json={"preset": "public_chat", "room_alias_name": "hall"}).json()
    their_alias = f"#hall:{synapse.server_name}"
    looked_up = alice.api.get(f"{V3}/directory/room/{quote(their_alias)}")
    assert looked_up.status_code == 200, (looked_up.text, ours.log()[-3000:])
    assert looked_up.json()["room_id"] == theirs["room_id"]
    assert synapse.server_name in looked_up.json()["servers"]
    joined = alice.api.post(f"{V3}/join/{quote(their_alias)}", json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-3000:])
    assert joined.json()["room_id"] == theirs["room_id"]
    missing = alice.api.get(f"{V3}/directory/room/{quote('#nope:' + synapse.server_name)}")
    assert missing.status_code == 404


def _synapse_ephemeral(bob: SynapseUser, room_id: str, since: str | None) -> tuple[list[dict[str, Any]], str]:
    params = {"timeout": "1000", **({"since": since} if since else {})}
    body = bob.http.get(f"{V3}/sync", params=params).json()
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return room.get("ephemeral", {}).get("events", []), body["next_batch"]


def test_typing_and_receipts_flow_both_ways(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    bob = SynapseUser(synapse)
    assert bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={}).status_code == 200
    wait_for(lambda: bob.user_id in alice.api.get(f"{V3}/rooms/{room_id}/joined_members").json()["joined"], what="join")
    event_id = alice.api.put(
        f"{V3}/rooms/{room_id}/send/m.room.message/r1", json={"msgtype": "m.text", "body": "read me"}
    ).json()["event_id"]
    wait_for(lambda: "read me" in bodies(bob.messages(room_id)), what="message on Synapse")

    # Ours -> Synapse: alice types and reads.
    _, since = _synapse_ephemeral(bob, room_id, None)
    assert alice.api.put(f"{V3}/rooms/{room_id}/typing/{alice.user_id}", json={"typing": True, "timeout": 20000}).status_code == 200
    assert alice.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}", json={}).status_code == 200
    seen: dict[str, Any] = {}

    def synapse_saw_both() -> bool:
        nonlocal since
        events, since = _synapse_ephemeral(bob, room_id, since)
        for event in events:
            seen[event["type"]] = event["content"]
        typing = alice.user_id in seen.get("m.typing", {}).get("user_ids", [])
        receipt = alice.user_id in seen.get("m.receipt", {}).get(event_id, {}).get("m.read", {})
        return typing and receipt

    wait_for(synapse_saw_both, what="alice's typing and receipt on Synapse")

    # Synapse -> ours: bob types and reads.
    first = alice.api.get(f"{V3}/sync", params={"timeout": "0"}).json()
    since_ours = first["next_batch"]
    bob.http.put(f"{V3}/rooms/{room_id}/typing/{bob.user_id}", json={"typing": True, "timeout": 20000})
    bob.http.post(f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}", json={})
    ours_seen: dict[str, Any] = {}

    def ours_saw_both() -> bool:
        nonlocal since_ours
        body = alice.api.get(f"{V3}/sync", params={"since": since_ours, "timeout": "1000"}).json()
        since_ours = body["next_batch"]
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("ephemeral", {}).get("events", []):
            ours_seen[event["type"]] = event["content"]
        typing = bob.user_id in ours_seen.get("m.typing", {}).get("user_ids", [])
        receipt = bob.user_id in ours_seen.get("m.receipt", {}).get(event_id, {}).get("m.read", {})
        return typing and receipt

    wait_for(ours_saw_both, timeout=30, what="bob's typing and receipt on our server")
