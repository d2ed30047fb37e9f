"""Backfill from a hostile peer: the only other server in a room serves, through
/backfill, /state_ids and /event, forged events among its honest history. We keep
the history and none of the forgeries, and /messages keeps answering."""

from __future__ import annotations

import copy
import sqlite3
from typing import Any


from homeserver.events import generate_signing_key
from tests.conftest import V3, register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess
from tests.test_federation_history import paginate_back


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message" and "body" in e["content"]]


def test_backfill_keeps_no_forged_event(ours: ServerProcess, peer: FakePeer) -> None:
    log_start = len(ours.log())
    room = peer.new_room("10")
    creator, mallory = peer.user("creator"), peer.user("mallory")
    room.send(creator, "m.room.member", {"membership": "join"}, state_key=creator)
    power = {"users": {creator: 100}, "users_default": 0, "events_default": 0, "state_default": 50,
             "ban": 50, "kick": 50, "redact": 50, "invite": 0, "events": {}}
    room.send(creator, "m.room.power_levels", power, state_key="")
    room.send(creator, "m.room.join_rules", {"join_rule": "public"}, state_key="")
    room.send(creator, "m.room.history_visibility", {"history_visibility": "shared"}, state_key="")
    room.send(mallory, "m.room.member", {"membership": "join"}, state_key=mallory)
    for i in range(5):
        room.send(creator, "m.room.message", {"msgtype": "m.text", "body": f"h{i}"})
    fork = list(room.tips)

    # Forgeries, each on the same parent, all cited by the next honest event, so a
    # backfill walking back from the present meets every one of them.
    wrong_key = generate_signing_key("a_fake")  # the peer's key ID, another key
    bad_sig_id = room.insert(room.build(creator, "m.room.message", {"msgtype": "m.text", "body": "bad signature"},
                                        prev_events=fork, signing_key=wrong_key)[1])
    victim = f"@victim:{ours.server_name}"
    impostor_id = room.insert(room.build(victim, "m.room.message", {"msgtype": "m.text", "body": "impersonated"},
                                         prev_events=fork)[1])
    tampered_id, original = room.build(creator, "m.room.message", {"msgtype": "m.text", "body": "original"},
                                       prev_events=fork)
    tampered = copy.deepcopy(original)
    tampered["content"]["body"] = "tampered"
    room.insert(tampered, tampered_id)  # its ID is the redacted form's hash: unchanged
    # Fails the auth rules: mallory (power 0) renames the room (state_default 50).
    unauthorised_id = room.insert(room.build(mallory, "m.room.name", {"name": "pwned"}, state_key="",
                                             prev_events=fork)[1])
    room.send(creator, "m.room.message", {"msgtype": "m.text", "body": "h5"},
              prev_events=[*fork, bad_sig_id, impostor_id, tampered_id, unauthorised_id])
    for i in range(6, 30):
        room.send(creator, "m.room.message", {"msgtype": "m.text", "body": f"h{i}"})
    # /state_ids adds a forged power levels event (mallory at 100, wrong key); only
    # /event has it.
    forged_power_id = room.insert(room.build(creator, "m.room.power_levels", {**power, "users": {mallory: 100}},
                                             state_key="", prev_events=fork, signing_key=wrong_key)[1])
    room.extra_state_ids.append(forged_power_id)
    forged = {bad_sig_id, impostor_id, unauthorised_id, forged_power_id}

    alice = register_user(ours.base_url)
    joined = alice.api.post(f"{V3}/join/{room.room_id}", params={"via": peer.server_name}, json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-3000:])

    # Paging back to the create event: the honest history, in order, without the
    # forgeries; the tampered event is kept only as the redacted event it now is.
    timeline = paginate_back(alice, room.room_id, limit=10)
    assert texts(timeline) == [f"h{i}" for i in range(30)], ours.log()[-3000:]
    assert timeline[0]["type"] == "m.room.create"
    ids = [e["event_id"] for e in timeline]
    assert not forged & set(ids)
    assert all(e["content"] == {} for e in timeline if e["event_id"] == tampered_id)
    # The peer was asked what backfill asks: history, the state before a batch, and
    # the forged state event by ID.
    assert any(p.startswith("/_matrix/federation/v1/backfill/") for p in peer.served)
    assert any(p.startswith("/_matrix/federation/v1/state_ids/") for p in peer.served)
    assert f"/_matrix/federation/v1/event/{forged_power_id}" in peer.served

    # No client can get at a forged event, and the room is as the honest events say.
    for event_id in [*forged, tampered_id]:
        got = alice.api.get(f"{V3}/rooms/{room.room_id}/event/{event_id}")
        if event_id == tampered_id and got.status_code == 200:
            assert got.json()["content"] == {}
        else:
            assert got.status_code == 404, (event_id, got.text)
    assert alice.api.get(f"{V3}/rooms/{room.room_id}/state/m.room.name").status_code == 404
    levels = alice.api.get(f"{V3}/rooms/{room.room_id}/state/m.room.power_levels").json()
    assert levels["users"] == {creator: 100}

    # Paging again answers the same (what we hold), and asks the peer nothing new
    # that it could use to slip anything in.
    again = paginate_back(alice, room.room_id, limit=25)
    assert [e["event_id"] for e in again] == ids

    # In the database: the events with a bad signature never; the one failing auth
    # only as rejected (so it is not fetched again); the tampered one redacted.
    database = ours.directory / "data" / "homeserver.db"
    if database.exists():  # SQLite (the PostgreSQL run checks through the API only)
        with sqlite3.connect(database) as conn:
            rows = dict(conn.execute(
                f"SELECT event_id, rejected_reason FROM events WHERE event_id IN ({','.join('?' * len(forged))})",
                sorted(forged),
            ).fetchall())
            assert set(rows) <= {unauthorised_id}, rows
            assert all(reason for reason in rows.values()), rows
            stored = conn.execute("SELECT json FROM events WHERE event_id = ?", (tampered_id,)).fetchone()
            assert stored is None or "tampered" not in stored[0] and "original" not in stored[0]
    log = ours.log()[log_start:]
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def test_dropped_events_above_history_do_not_stall_backfill(ours: ServerProcess, peer: FakePeer) -> None:
    room, creator = peer.public_room()
    room.send(creator, "m.room.history_visibility", {"history_visibility": "shared"}, state_key="")
    for i in range(40):
        room.send(creator, "m.room.message", {"msgtype": "m.text", "body": f"h{i}"})
    # Badly signed events near the present, cited by the newest honest event.
    fork = list(room.tips)
    wrong_key = generate_signing_key("a_fake")
    bad = [
        room.insert(room.build(creator, "m.room.message", {"msgtype": "m.text", "body": f"bad {j}"},
                               prev_events=fork, signing_key=wrong_key)[1])
        for j in range(3)
    ]
    room.send(creator, "m.room.message", {"msgtype": "m.text", "body": "h40"}, prev_events=[*fork, *bad])

    alice = register_user(ours.base_url)
    joined = alice.api.post(f"{V3}/join/{room.room_id}", params={"via": peer.server_name}, json={})
    assert joined.status_code == 200, (joined.text, ours.log()[-3000:])
    timeline = paginate_back(alice, room.room_id, limit=10)
    assert texts(timeline) == [f"h{i}" for i in range(41)]
