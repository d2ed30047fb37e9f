"""Gaps in a room's history: get_missing_events walks back as far as 200 events, 20 per
request; an event whose history we cannot fetch (get_missing_events fails or falls
short) is accepted on the state its server gives for it (/state_ids, then /event for
what we lack), instead of losing it and everything after it."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import pytest

from tests.conftest import V3, User, register_user
from tests.fake_peer import FakePeer, PeerRoom
from tests.server import ServerProcess
from tests.test_rooms_helpers import open_event_store


def _bodies(user: User, room_id: str) -> list[str]:
    response = user.api.get(f"{V3}/rooms/{quote(room_id)}/messages", params={"dir": "b", "limit": 100})
    assert response.status_code == 200, response.text
    return [e["content"].get("body") for e in response.json()["chunk"] if e["type"] == "m.room.message"]


def _joined_peer_room(ours: ServerProcess, peer: FakePeer) -> tuple[PeerRoom, str, User]:
    """A public room of the peer's, with a user of ours joined."""
    room, creator = peer.public_room()
    alice = register_user(ours.base_url)
    joined = alice.api.post(f"{V3}/join/{room.room_id}", params={"via": peer.server_name}, json={})
    assert joined.status_code == 200, joined.text
    return room, creator, alice


def _send_beyond_a_gap(ours: ServerProcess, peer: FakePeer, room: PeerRoom, creator: str, txn_id: str) -> tuple[str, str]:
    """A state change and more messages than one gap fill fetches, never sent to us,
    then an event after them that is: (the state change's ID, the event's ID)."""
    renamed_id, _ = room.send(creator, "m.room.name", {"name": "Renamed while we were away"}, state_key="")
    for i in range(25):
        room.send(creator, "m.room.message", {"msgtype": "m.text", "body": f"unseen {i}"})
    event_id, pdu = room.send(creator, "m.room.message", {"msgtype": "m.text", "body": "after the gap"})
    answer = peer.send_transaction(ours, txn_id, [pdu])
    assert answer.status_code == 200, answer.text
    assert answer.json()["pdus"][event_id] == {}
    return renamed_id, event_id


def test_event_beyond_an_unfillable_gap_is_accepted_on_fetched_state(ours: ServerProcess, peer: FakePeer) -> None:
    room, creator, alice = _joined_peer_room(ours, peer)

    # History we are never sent, and the fake peer has no get_missing_events.
    _, event_id = _send_beyond_a_gap(ours, peer, room, creator, "gap1")
    assert any(p.startswith("/_matrix/federation/v1/event/") for p in peer.served)

    deadline = time.monotonic() + 10
    while "after the gap" not in _bodies(alice, room.room_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "after the gap" in _bodies(alice, room.room_id)
    name = alice.api.get(f"{V3}/rooms/{quote(room.room_id)}/state/m.room.name/")
    assert name.status_code == 200 and name.json()["name"] == "Renamed while we were away"

    # The room goes on: our next event builds on the accepted one.
    sent = alice.api.put(f"{V3}/rooms/{quote(room.room_id)}/send/m.room.message/t1", json={"msgtype": "m.text", "body": "hi"})
    assert sent.status_code == 200, sent.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [p for p in peer.received_pdus if p.get("content", {}).get("body") == "hi"]
        if mine:
            assert event_id in mine[0]["prev_events"]
            break
        time.sleep(0.1)
    else:
        raise AssertionError("our next event never reached the peer")


def test_a_long_gap_is_filled_twenty_events_at_a_time(
    ours: ServerProcess, peer: FakePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server back from a while away is sent only a room's newest event; the 65 we
    missed come in four get_missing_events requests, and clients see them all."""
    monkeypatch.setattr(peer, "serves_missing_events", True)
    room, creator, alice = _joined_peer_room(ours, peer)

    unseen = [f"missed {i}" for i in range(65)]
    for body in unseen:
        room.send(creator, "m.room.message", {"msgtype": "m.text", "body": body})
    event_id, pdu = room.send(creator, "m.room.message", {"msgtype": "m.text", "body": "after the gap"})
    served_before = len(peer.served)
    answer = peer.send_transaction(ours, "gap2", [pdu])
    assert answer.status_code == 200, answer.text
    assert answer.json()["pdus"][event_id] == {}

    served = peer.served[served_before:]
    assert sum(1 for p in served if "/get_missing_events/" in p) == 4, served
    # Nothing had to be taken on trust: no state was fetched.
    assert not any("/state_ids/" in p for p in served)
    bodies = _bodies(alice, room.room_id)
    assert bodies[0] == "after the gap"
    assert bodies[1:] == list(reversed(unseen))


def test_state_fetched_across_a_gap_must_pass_the_auth_rules(ours: ServerProcess, peer: FakePeer) -> None:
    """The state a server gives for an event beyond a gap is kept only where each
    event passes the auth rules against its own auth events: a correctly signed
    history_visibility from someone who never joined is not stored at all. (State
    resolution with ours already kept it out of the room's state.)"""
    room, creator, alice = _joined_peer_room(ours, peer)

    stranger = peer.user("stranger")
    visibility = {"history_visibility": "world_readable"}
    forged_id = room.insert(room.build(stranger, "m.room.history_visibility", visibility, state_key="")[1])
    room.extra_state_ids.append(forged_id)
    renamed_id, _ = _send_beyond_a_gap(ours, peer, room, creator, "gap3")

    async def stored() -> tuple[bool, bool]:
        async with open_event_store(ours) as store:
            return await store.get_event(renamed_id) is not None, await store.get_event(forged_id) is not None

    assert asyncio.run(stored()) == (True, False)
    name = alice.api.get(f"{V3}/rooms/{quote(room.room_id)}/state/m.room.name/")
    assert name.status_code == 200 and name.json()["name"] == "Renamed while we were away"
