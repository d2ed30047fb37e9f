"""A hostile peer: forged signatures, wrong hashes, events failing auth, oversized
transactions, unknown rooms. Each is refused; the room stays as it was."""

from __future__ import annotations

import copy

import httpx

from homeserver.events import compute_event_id, get_room_version, select_auth_event_ids
from tests.conftest import V3, register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess


def test_hostile_peer(ours: ServerProcess, peer: FakePeer) -> None:
    assert ours.federation_port is not None
    alice = register_user(ours.base_url)
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat", "name": "Guarded"}).json()["room_id"]
    mallory = peer.user("mallory")

    made = peer.request("GET", ours.server_name, ours.federation_port,
                        f"/_matrix/federation/v1/make_join/{room_id}/{mallory}?ver=12&ver=11&ver=10")
    assert made.status_code == 200, made.text
    version = made.json()["room_version"]
    template = made.json()["event"]
    join_id, join = peer.sign_event(version, template)
    joined = peer.request("PUT", ours.server_name, ours.federation_port,
                          f"/_matrix/federation/v2/send_join/{room_id}/{join_id}", join)
    assert joined.status_code == 200, (joined.text, ours.log()[-3000:])
    assert {e["type"] for e in joined.json()["state"]} >= {"m.room.create", "m.room.power_levels", "m.room.join_rules"}

    # A well-formed message builds on mallory's join, citing the auth events a
    # message needs (create before v12, power levels, the sender's membership).
    state = {(e["type"], e["state_key"]): compute_event_id(get_room_version(version), e) for e in joined.json()["state"]}
    state[("m.room.member", mallory)] = join_id
    auth = select_auth_event_ids(get_room_version(version), "m.room.message", None, mallory, {}, state)
    base = {"room_id": room_id, "sender": mallory, "depth": template["depth"] + 1, "prev_events": [join_id]}
    good_id, good = peer.sign_event(version, {**base, "auth_events": auth, "type": "m.room.message",
                                              "content": {"msgtype": "m.text", "body": "legit"}})
    assert peer.send_transaction(ours, "t1", [good]).json()["pdus"] == {good_id: {}}

    # Forged: content changed after signing (and hash fixed up) -> bad signature, dropped.
    forged = copy.deepcopy(good)
    forged["content"]["body"] = "forged"
    forged["depth"] += 1
    # Wrong hash only: the event was tampered with in transit; we must process it redacted.
    _, tampered_source = peer.sign_event(version, {**base, "auth_events": auth, "type": "m.room.message",
                                                   "content": {"msgtype": "m.text", "body": "original"}, "depth": base["depth"] + 1, "prev_events": [good_id]})
    tampered = copy.deepcopy(tampered_source)
    tampered["content"]["body"] = "tampered"
    # Fails auth: mallory (power 0) tries to change the room name.
    name_auth = select_auth_event_ids(get_room_version(version), "m.room.name", "", mallory, {}, state)
    bad_auth_id, bad_auth = peer.sign_event(version, {**base, "auth_events": name_auth, "type": "m.room.name", "state_key": "",
                                                      "content": {"name": "pwned"}, "prev_events": [good_id], "depth": base["depth"] + 1})
    # An event for a room we are not in.
    _, unknown_room = peer.sign_event(version, {**base, "auth_events": auth, "room_id": "!nowhere:" + peer.server_name, "type": "m.room.message",
                                                "content": {"body": "?"}})
    answer = peer.send_transaction(ours, "t2", [forged, tampered, bad_auth, unknown_room])
    assert answer.status_code == 200, answer.text
    results = answer.json()["pdus"]
    assert "error" in results[bad_auth_id]
    # Oversized transaction: refused whole.
    too_many = peer.send_transaction(ours, "t3", [good] * 51)
    assert too_many.status_code == 400

    # Our room: name unchanged; the legit message there; no forged or tampered text.
    assert alice.api.get(f"{V3}/rooms/{room_id}/state/m.room.name").json() == {"name": "Guarded"}
    chunk = alice.api.get(f"{V3}/rooms/{room_id}/messages", params={"dir": "b", "limit": 50}).json()["chunk"]
    texts = [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]
    assert "legit" in texts
    assert "forged" not in texts and "tampered" not in texts
    # The tampered event is processed as the redacted event it now is: no body at all.
    assert "original" not in texts
    assert "Unhandled error" not in ours.log()

    # Unsigned requests to every inbound route are refused.
    for path in (f"/_matrix/federation/v1/make_join/{room_id}/{mallory}", f"/_matrix/federation/v1/state_ids/{room_id}"):
        response = httpx.get(f"https://127.0.0.1:{ours.federation_port}{path}", verify=False)
        assert response.status_code == 401
