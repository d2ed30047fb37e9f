"""Rooms of three servers: as the resident server we relay the joins, leaves and
knocks other servers hand us (send_join, send_leave, send_knock) to the room's
remaining servers (spec: Server-Server API, "Joining Rooms"). Room on ours A, a real
Synapse in it, and a second server of ours B coming in through A."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import V3, User, register_user
from tests.server import ServerProcess
from tests.synapse import SynapseProcess
from tests.test_federation_rooms import SynapseUser, bodies, our_messages, wait_for


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("relay_b"), federation=True)
    process.start()
    yield process
    process.stop()


def synapse_membership(bob: SynapseUser, room_id: str, user_id: str) -> str | None:
    response = bob.http.get(f"{V3}/rooms/{room_id}/state/m.room.member/{user_id}")
    return response.json().get("membership") if response.status_code == 200 else None


def synapse_sync_members(bob: SynapseUser, room_id: str) -> dict[str, str]:
    """Membership per user as Synapse's /sync shows bob the room (state + timeline)."""
    body = bob.http.get(f"{V3}/sync", params={"timeout": "0"}).json()
    room: dict[str, Any] = body.get("rooms", {}).get("join", {}).get(room_id, {})
    events = [*room.get("state", {}).get("events", []), *room.get("timeline", {}).get("events", [])]
    return {e["state_key"]: e["content"].get("membership") for e in events if e["type"] == "m.room.member"}


def shared_room(alice: User, bob: SynapseUser, ours: ServerProcess, **extra: Any) -> str:
    created = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat", **extra})
    assert created.status_code == 200, created.text
    room_id = str(created.json()["room_id"])
    joined = bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-3000:])
    wait_for(
        lambda: bob.user_id in alice.api.get(f"{V3}/rooms/{room_id}/joined_members").json()["joined"],
        what="the Synapse user's join on A",
    )
    return room_id


def test_join_through_us_reaches_synapse(ours: ServerProcess, second: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    bob = SynapseUser(synapse)
    room_id = shared_room(alice, bob, ours, name="Three servers")

    carol = register_user(second.base_url)
    joined = carol.api.post(f"{V3}/join/{room_id}", params={"via": ours.server_name}, json={})
    assert joined.status_code == 200, (joined.text, second.log()[-3000:], ours.log()[-3000:])

    # Synapse learns of carol's join only from A, which relayed it.
    wait_for(
        lambda: carol.user_id in bob.http.get(f"{V3}/rooms/{room_id}/joined_members").json().get("joined", {}),
        what="B's join in Synapse's room state",
    )
    assert synapse_sync_members(bob, room_id).get(carol.user_id) == "join"

    # So Synapse sends to B directly, and B to Synapse.
    sent = bob.http.put(f"{V3}/rooms/{room_id}/send/m.room.message/s1", json={"msgtype": "m.text", "body": "hi carol"})
    assert sent.status_code == 200, sent.text
    wait_for(lambda: "hi carol" in bodies(our_messages(carol, room_id)), what="Synapse's message at B")
    carol.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/c1", json={"msgtype": "m.text", "body": "hi bob"})
    wait_for(lambda: "hi bob" in bodies(bob.messages(room_id)), what="B's message at Synapse")
    wait_for(lambda: "hi bob" in bodies(our_messages(alice, room_id)), what="B's message at A")


def test_synapse_join_through_us_reaches_b(ours: ServerProcess, second: ServerProcess, synapse: SynapseProcess) -> None:
    # Our B sends its own join to every server it learns of from send_join, so the
    # join that only the resident server can pass on is Synapse's, joining after B.
    alice = register_user(ours.base_url)
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    carol = register_user(second.base_url)
    joined = carol.api.post(f"{V3}/join/{room_id}", params={"via": ours.server_name}, json={})
    assert joined.status_code == 200, (joined.text, second.log()[-3000:])
    bob = SynapseUser(synapse)
    joined = bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-3000:])

    # B holds bob's join before bob says anything: A relayed it.
    wait_for(
        lambda: bob.user_id in carol.api.get(f"{V3}/rooms/{room_id}/joined_members").json()["joined"],
        what="Synapse's join at B",
    )
    bob.http.put(f"{V3}/rooms/{room_id}/send/m.room.message/s1", json={"msgtype": "m.text", "body": "from synapse"})
    wait_for(lambda: "from synapse" in bodies(our_messages(carol, room_id)), what="Synapse's message at B")
    carol.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/c1", json={"msgtype": "m.text", "body": "from b"})
    wait_for(lambda: "from b" in bodies(bob.messages(room_id)), what="B's message at Synapse")


def test_leave_and_knock_through_us_reach_synapse(
    ours: ServerProcess, second: ServerProcess, synapse: SynapseProcess
) -> None:
    log_start = {server: len(server.log()) for server in (ours, second)}
    alice = register_user(ours.base_url)
    bob = SynapseUser(synapse)
    room_id = shared_room(alice, bob, ours)

    # dave (on B) rejects A's invite: B is not in the room, so the leave goes through
    # A's send_leave, and A relays it.
    dave = register_user(second.base_url)
    invited = alice.api.post(f"{V3}/rooms/{room_id}/invite", json={"user_id": dave.user_id})
    assert invited.status_code == 200, (invited.text, ours.log()[-3000:])
    wait_for(lambda: synapse_membership(bob, room_id, dave.user_id) == "invite", what="the invite at Synapse")
    rejected = dave.api.post(f"{V3}/rooms/{room_id}/leave", json={})
    assert rejected.status_code == 200, (rejected.text, second.log()[-3000:])
    assert alice.api.get(f"{V3}/rooms/{room_id}/state/m.room.member/{dave.user_id}").json()["membership"] == "leave"
    wait_for(lambda: synapse_membership(bob, room_id, dave.user_id) == "leave", what="B's leave at Synapse")

    # erin (on B) knocks through A's send_knock, and A relays the knock.
    put = alice.api.put(f"{V3}/rooms/{room_id}/state/m.room.join_rules", json={"join_rule": "knock"})
    assert put.status_code == 200, put.text
    wait_for(
        lambda: bob.http.get(f"{V3}/rooms/{room_id}/state/m.room.join_rules").json().get("join_rule") == "knock",
        what="the join rule at Synapse",
    )
    erin = register_user(second.base_url)
    knocked = erin.api.post(f"{V3}/knock/{room_id}", params={"via": ours.server_name}, json={"reason": "let me in"})
    assert knocked.status_code == 200, (knocked.text, second.log()[-3000:])
    wait_for(lambda: synapse_membership(bob, room_id, erin.user_id) == "knock", what="B's knock at Synapse")
    for server, start in log_start.items():
        assert "Traceback" not in server.log()[start:], server.log()[-3000:]
