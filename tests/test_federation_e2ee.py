"""End-to-end encryption across servers: device keys, one-time keys, cross-signing
keys, to-device messages, device-list updates and presence between our server and a
real Synapse, and between two of ours; and what a hostile peer cannot do."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.crypto import ENCRYPTION_ENABLED
from signedjson.key import (
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.sign import sign_json

from federation.request_auth import authorization_header
from tests.conftest import V3, User, register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess
from tests.synapse import SynapseProcess
from tests.test_federation_rooms import wait_for

FED_V1 = "/_matrix/federation/v1"


# --- helpers --------------------------------------------------------------------------


def device_keys(user_id: str, device_id: str) -> dict[str, Any]:
    """Well-formed device keys, self-signed by the device's ed25519 key."""
    key = generate_signing_key(device_id)
    keys = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device_id}": encode_verify_key_base64(get_verify_key(generate_signing_key("c"))),
            f"ed25519:{device_id}": encode_verify_key_base64(get_verify_key(key)),
        },
    }
    return sign_json(keys, user_id, key)


def one_time_key(user_id: str, device_id: str) -> tuple[str, dict[str, Any]]:
    key_id = "signed_curve25519:" + secrets.token_hex(4)
    value = {"key": encode_verify_key_base64(get_verify_key(generate_signing_key("o")))}
    return key_id, sign_json(value, user_id, generate_signing_key(device_id))


def master_key(user_id: str) -> dict[str, Any]:
    key = generate_signing_key("m")
    public = encode_verify_key_base64(get_verify_key(key))
    return {"user_id": user_id, "usage": ["master"], "keys": {f"ed25519:{public}": public}}


class Side:
    """One user on either server, driven over plain HTTP."""

    def __init__(self, user_id: str, device_id: str, http: httpx.Client) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.http = http

    @classmethod
    def ours(cls, user: User) -> Side:
        return cls(user.user_id, user.device_id, user.api)

    @classmethod
    def synapse(cls, synapse: SynapseProcess) -> Side:
        registered = synapse.register()
        http = httpx.Client(
            base_url=synapse.base_url, headers={"Authorization": f"Bearer {registered['access_token']}"}, timeout=60
        )
        return cls(registered["user_id"], registered["device_id"], http)

    def upload_keys(self, one_time: int = 0) -> dict[str, Any]:
        keys = device_keys(self.user_id, self.device_id)
        body: dict[str, Any] = {"device_keys": keys}
        if one_time:
            body["one_time_keys"] = dict(one_time_key(self.user_id, self.device_id) for _ in range(one_time))
        response = self.http.post(f"{V3}/keys/upload", json=body)
        assert response.status_code == 200, response.text
        return keys

    def query(self, user_id: str) -> dict[str, Any]:
        response = self.http.post(f"{V3}/keys/query", json={"device_keys": {user_id: []}})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def sync(self, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout": timeout}
        if since:
            params["since"] = since
        response = self.http.get(f"{V3}/sync", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())


def share_room(ours: ServerProcess, alice: Side, bob: Side) -> str:
    """A room on our server that bob (Synapse) joins."""
    room_id = alice.http.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    joined = bob.http.post(f"{V3}/join/{room_id}", params={"server_name": ours.server_name}, json={})
    assert joined.status_code == 200, joined.text
    wait_for(
        lambda: bob.user_id in alice.http.get(f"{V3}/rooms/{room_id}/joined_members").json()["joined"],
        what="bob's join on our server",
    )
    return room_id


def to_device_events(side: Side, state: dict[str, str | None], event_type: str) -> list[dict[str, Any]]:
    """Sync on (keeping the token in `state`) and return the to-device events of a type."""
    body = side.sync(state.get("since"))
    state["since"] = body["next_batch"]
    return [e for e in body.get("to_device", {}).get("events", []) if e["type"] == event_type]


@pytest.fixture(scope="module")
def pair(ours: ServerProcess, synapse: SynapseProcess) -> Iterator[tuple[Side, Side, str]]:
    alice = Side.ours(register_user(ours.base_url))
    bob = Side.synapse(synapse)
    room_id = share_room(ours, alice, bob)
    yield alice, bob, room_id
    bob.http.close()


# --- with Synapse -----------------------------------------------------------------------


def test_keys_query_both_ways_with_synapse(pair: tuple[Side, Side, str], synapse: SynapseProcess) -> None:
    alice, bob, _ = pair
    alice_keys, bob_keys = alice.upload_keys(), bob.upload_keys()
    alice_master, bob_master = master_key(alice.user_id), master_key(bob.user_id)
    assert alice.http.post(f"{V3}/keys/device_signing/upload", json={"master_key": alice_master}).status_code == 200
    uploaded = bob.http.post(f"{V3}/keys/device_signing/upload", json={"master_key": bob_master})
    assert uploaded.status_code == 200, uploaded.text

    def bob_seen_by_alice() -> dict[str, Any] | None:
        found = alice.query(bob.user_id)
        return found if found["master_keys"].get(bob.user_id) else None

    found = wait_for(bob_seen_by_alice, what="bob's keys with his master key, asked from our server")
    assert found["failures"] == {}
    theirs = found["device_keys"][bob.user_id][bob.device_id]
    assert theirs["keys"] == bob_keys["keys"] and theirs["signatures"][bob.user_id] == bob_keys["signatures"][bob.user_id]
    assert found["master_keys"][bob.user_id]["keys"] == bob_master["keys"]

    def alice_seen_by_bob() -> dict[str, Any] | None:
        found = bob.query(alice.user_id)
        return found if found.get("master_keys", {}).get(alice.user_id) else None

    found = wait_for(alice_seen_by_bob, what="alice's keys, asked from Synapse")
    mine = found["device_keys"][alice.user_id][alice.device_id]
    assert mine["keys"] == alice_keys["keys"]
    assert found["master_keys"][alice.user_id]["keys"] == alice_master["keys"]

    # Known and kept current by device-list updates: asking again does not go to Synapse.
    fetches = synapse.log().count(f"/user/devices/{quote(bob.user_id)}") + synapse.log().count(
        f"/user/devices/{bob.user_id}"
    )
    for _ in range(3):
        assert bob.device_id in alice.query(bob.user_id)["device_keys"][bob.user_id]
    assert synapse.log().count(f"/user/devices/{quote(bob.user_id)}") + synapse.log().count(
        f"/user/devices/{bob.user_id}"
    ) == fetches


def test_claim_one_time_keys_both_ways_with_synapse(pair: tuple[Side, Side, str]) -> None:
    alice, bob, _ = pair
    alice.upload_keys(one_time=2)
    bob.upload_keys(one_time=2)
    claimed = alice.http.post(
        f"{V3}/keys/claim", json={"one_time_keys": {bob.user_id: {bob.device_id: "signed_curve25519"}}}
    ).json()
    assert claimed["failures"] == {}
    [(key_id, key)] = claimed["one_time_keys"][bob.user_id][bob.device_id].items()
    assert key_id.startswith("signed_curve25519:") and "key" in key

    response = bob.http.post(
        f"{V3}/keys/claim", json={"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    )
    assert response.status_code == 200, response.text
    [(key_id, key)] = response.json()["one_time_keys"][alice.user_id][alice.device_id].items()
    assert key_id.startswith("signed_curve25519:") and "key" in key
    counts = alice.http.post(f"{V3}/keys/upload", json={}).json()["one_time_key_counts"]
    assert counts.get("signed_curve25519") == 1


def test_to_device_both_ways_with_synapse(pair: tuple[Side, Side, str]) -> None:
    alice, bob, _ = pair
    alice_state: dict[str, str | None] = {}
    bob_state: dict[str, str | None] = {}
    to_device_events(alice, alice_state, "m.test")
    to_device_events(bob, bob_state, "m.test")

    sent = alice.http.put(
        f"{V3}/sendToDevice/m.test/{secrets.token_hex(4)}",
        json={"messages": {bob.user_id: {bob.device_id: {"hello": "from ours"}}}},
    )
    assert sent.status_code == 200, sent.text
    events = wait_for(lambda: to_device_events(bob, bob_state, "m.test"), what="our to-device message at Synapse")
    assert events == [{"type": "m.test", "sender": alice.user_id, "content": {"hello": "from ours"}}]

    sent = bob.http.put(
        f"{V3}/sendToDevice/m.test/{secrets.token_hex(4)}",
        json={"messages": {alice.user_id: {"*": {"hello": "from synapse"}}}},
    )
    assert sent.status_code == 200, sent.text
    events = wait_for(lambda: to_device_events(alice, alice_state, "m.test"), what="Synapse's to-device message here")
    assert [(e["sender"], e["content"]) for e in events] == [(bob.user_id, {"hello": "from synapse"})]


def test_new_synapse_device_shows_in_device_lists(pair: tuple[Side, Side, str], synapse: SynapseProcess) -> None:
    alice, bob, _ = pair
    alice.query(bob.user_id)  # cached here now
    since = before = alice.sync()["next_batch"]
    login = httpx.post(
        f"{synapse.base_url}{V3}/login",
        json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id}, "password": "synapse-password"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    second = Side(bob.user_id, login.json()["device_id"], httpx.Client(
        base_url=synapse.base_url, headers={"Authorization": f"Bearer {login.json()['access_token']}"}, timeout=60
    ))
    second.upload_keys()

    def changed() -> bool:
        nonlocal since
        body = alice.sync(since)
        since = body["next_batch"]
        return bob.user_id in body.get("device_lists", {}).get("changed", [])

    wait_for(changed, what="bob in alice's device_lists.changed")
    # Synapse announces the new device, then its keys: the query shows it once both came.
    wait_for(
        lambda: {bob.device_id, second.device_id} <= set(alice.query(bob.user_id)["device_keys"][bob.user_id]),
        what="bob's second device in alice's key query",
    )
    # /keys/changes says the same.
    changes = alice.http.get(f"{V3}/keys/changes", params={"from": before, "to": since})
    assert changes.status_code == 200 and bob.user_id in changes.json()["changed"]
    second.http.close()


def test_our_new_device_reaches_synapse(pair: tuple[Side, Side, str], ours: ServerProcess) -> None:
    _, bob, _ = pair
    since = bob.sync()["next_batch"]
    carol_user = register_user(ours.base_url)
    carol = Side.ours(carol_user)
    assert carol.http.post(f"{V3}/join/{pair[2]}", json={}).status_code == 200
    carol.upload_keys()
    wait_for(lambda: bob.query(carol.user_id)["device_keys"].get(carol.user_id), what="carol's keys at Synapse")

    def bob_sees(device_id: str) -> bool:
        nonlocal since
        body = bob.sync(since)
        since = body["next_batch"]
        changed = carol.user_id in body.get("device_lists", {}).get("changed", [])
        return changed and device_id in bob.query(carol.user_id)["device_keys"].get(carol.user_id, {})

    # A second device of carol's uploads keys: our m.device_list_update tells Synapse.
    login = httpx.post(
        f"{ours.base_url}{V3}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": carol.user_id},
            "password": carol_user.password,
        },
        timeout=30,
    )
    assert login.status_code == 200, login.text
    second = Side(carol.user_id, login.json()["device_id"], httpx.Client(
        base_url=ours.base_url, headers={"Authorization": f"Bearer {login.json()['access_token']}"}, timeout=60
    ))
    second.upload_keys()
    wait_for(lambda: bob_sees(second.device_id), what="carol's new device at Synapse")
    second.http.close()


def test_presence_both_ways_with_synapse(pair: tuple[Side, Side, str]) -> None:
    alice, bob, _ = pair
    status = alice.http.put(
        f"{V3}/presence/{alice.user_id}/status", json={"presence": "online", "status_msg": "from ours"}
    )
    assert status.status_code == 200, status.text
    wait_for(
        lambda: bob.http.get(f"{V3}/presence/{alice.user_id}/status").json().get("status_msg") == "from ours",
        what="our presence at Synapse",
    )
    status = bob.http.put(
        f"{V3}/presence/{bob.user_id}/status", json={"presence": "online", "status_msg": "from synapse"}
    )
    assert status.status_code == 200, status.text
    wait_for(
        lambda: alice.http.get(f"{V3}/presence/{bob.user_id}/status").json().get("status_msg") == "from synapse",
        what="Synapse's presence here",
    )
    body = alice.sync()
    pushed = [e for e in body.get("presence", {}).get("events", []) if e["sender"] == bob.user_id]
    assert pushed and pushed[-1]["content"]["presence"] == "online"


# --- matrix-nio on both servers -----------------------------------------------------------

ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


async def _client(base_url: str, user_id: str, device_id: str, token: str, store: Path) -> AsyncClient:
    store.mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(base_url, user_id, device_id=device_id, store_path=str(store), config=config)
    client.restore_login(user_id, device_id, token)
    return client


async def _settle(client: AsyncClient) -> SyncResponse:
    response = await client.sync(timeout=0, full_state=client.next_batch is None)
    assert isinstance(response, SyncResponse), response
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    return response


async def _await_text(client: AsyncClient, room_id: str, body: str) -> RoomMessageText:
    undecryptable: list[MegolmEvent] = []
    for _ in range(100):
        response = await _settle(client)
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, RoomMessageText) and event.body == body:
                return event
            if isinstance(event, MegolmEvent):
                undecryptable.append(event)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{body!r} never arrived in plaintext (undecryptable: {undecryptable})")


@pytest.mark.skipif(not ENCRYPTION_ENABLED, reason="matrix-nio without its e2e extra")
async def test_encrypted_conversation_with_synapse(ours: ServerProcess, synapse: SynapseProcess, tmp_path: Path) -> None:
    alice_user = register_user(ours.base_url)
    registered = await asyncio.to_thread(synapse.register)
    alice = await _client(ours.base_url, alice_user.user_id, alice_user.device_id, alice_user.access_token, tmp_path / "a")
    bob = await _client(
        synapse.base_url, registered["user_id"], registered["device_id"], registered["access_token"], tmp_path / "b"
    )
    try:
        await _settle(alice)
        await _settle(bob)
        created = await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION_STATE])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        for _ in range(100):
            await _settle(bob)
            if room_id in bob.invited_rooms:
                break
            await asyncio.sleep(0.2)
        assert isinstance(await bob.join(room_id), JoinResponse)
        for _ in range(100):
            await _settle(alice)
            await _settle(bob)
            if bob.device_id in alice.device_store[bob.user_id] and alice.device_id in bob.device_store[alice.user_id]:
                break
            await asyncio.sleep(0.2)
        assert bob.device_id in alice.device_store[bob.user_id]

        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "secret across"}, ignore_unverified_devices=True
        )
        assert isinstance(sent, RoomSendResponse), sent
        plaintext = await _await_text(bob, room_id, "secret across")
        assert plaintext.sender == alice.user_id and plaintext.decrypted

        reply = await bob.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "secret back"}, ignore_unverified_devices=True
        )
        assert isinstance(reply, RoomSendResponse), reply
        answer = await _await_text(alice, room_id, "secret back")
        assert answer.sender == bob.user_id and answer.decrypted
    finally:
        await alice.close()
        await bob.close()


# --- two of ours ---------------------------------------------------------------------------


@pytest.fixture
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    first = ServerProcess(tmp_path_factory.mktemp("first"), federation=True)
    second = ServerProcess(tmp_path_factory.mktemp("second"), federation=True)
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def test_two_of_ours_keys_and_to_device(two: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = two
    alice, bob = Side.ours(register_user(first.base_url)), Side.ours(register_user(second.base_url))
    room_id = alice.http.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    assert bob.http.post(f"{V3}/join/{room_id}", params={"via": first.server_name}, json={}).status_code == 200
    alice_keys, bob_keys = alice.upload_keys(one_time=1), bob.upload_keys(one_time=1)

    found = alice.query(bob.user_id)
    assert found["device_keys"][bob.user_id][bob.device_id]["keys"] == bob_keys["keys"]
    found = bob.query(alice.user_id)
    assert found["device_keys"][alice.user_id][alice.device_id]["keys"] == alice_keys["keys"]
    claimed = bob.http.post(
        f"{V3}/keys/claim", json={"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    ).json()
    assert list(claimed["one_time_keys"][alice.user_id]) == [alice.device_id]

    # A user sharing no room with us is asked for every time (/user/keys/query); a
    # server that does not answer is listed in `failures`, without failing the rest.
    dave = Side.ours(register_user(second.base_url))
    dave_keys = dave.upload_keys()
    response = alice.http.post(
        f"{V3}/keys/query",
        json={"device_keys": {dave.user_id: [], "@nobody:localhost:1": []}, "timeout": 5000},
    )
    assert response.status_code == 200, response.text
    assert response.json()["device_keys"][dave.user_id][dave.device_id]["keys"] == dave_keys["keys"]
    assert list(response.json()["failures"]) == ["localhost:1"]

    state: dict[str, str | None] = {}
    to_device_events(alice, state, "m.ping")
    txn = secrets.token_hex(4)
    for _ in range(2):  # a retried request is delivered once
        sent = bob.http.put(f"{V3}/sendToDevice/m.ping/{txn}", json={"messages": {alice.user_id: {"*": {"n": 1}}}})
        assert sent.status_code == 200
    events = wait_for(lambda: to_device_events(alice, state, "m.ping"), what="bob's to-device at alice's server")
    assert [(e["sender"], e["content"]) for e in events] == [(bob.user_id, {"n": 1})]
    bob.http.put(f"{V3}/sendToDevice/m.ping/{secrets.token_hex(4)}", json={"messages": {alice.user_id: {"*": {"n": 2}}}})
    events = wait_for(lambda: to_device_events(alice, state, "m.ping"), what="the second to-device message")
    assert [e["content"] for e in events] == [{"n": 2}]

    # Bob renames his device: alice's sync lists him as changed, and her query sees
    # the new name (applied from the m.device_list_update onto the cached list).
    since = alice.sync()["next_batch"]
    renamed = bob.http.put(f"{V3}/devices/{bob.device_id}", json={"display_name": "bob's laptop"})
    assert renamed.status_code == 200

    def renamed_there() -> bool:
        nonlocal since
        body = alice.sync(since)
        since = body["next_batch"]
        return bob.user_id in body.get("device_lists", {}).get("changed", [])

    wait_for(renamed_there, what="bob's rename in alice's device_lists.changed")
    keys = alice.query(bob.user_id)["device_keys"][bob.user_id][bob.device_id]
    assert keys["unsigned"] == {"device_display_name": "bob's laptop"}


# --- hostile input ---------------------------------------------------------------------------


@pytest.fixture
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePeer]:
    fake = FakePeer(tmp_path_factory.mktemp("peer"))
    fake.start()
    yield fake
    fake.stop()


def _send_edus(peer: FakePeer, ours: ServerProcess, edus: list[dict[str, Any]]) -> None:
    assert ours.federation_port is not None
    body = {"origin": peer.server_name, "origin_server_ts": 0, "pdus": [], "edus": edus}
    response = peer.request(
        "PUT", ours.server_name, ours.federation_port, f"{FED_V1}/send/{secrets.token_hex(6)}", body
    )
    assert response.status_code == 200, response.text


def test_forged_and_duplicate_to_device_edus(ours: ServerProcess, peer: FakePeer) -> None:
    alice = Side.ours(register_user(ours.base_url))
    state: dict[str, str | None] = {}
    to_device_events(alice, state, "m.forged")

    def edu(sender: str, message_id: str, n: int) -> dict[str, Any]:
        content = {"sender": sender, "type": "m.forged", "message_id": message_id,
                   "messages": {alice.user_id: {alice.device_id: {"n": n}}}}
        return {"edu_type": "m.direct_to_device", "content": content}

    # A sender of another server (ours, here) is not the peer's to speak for.
    _send_edus(peer, ours, [edu(alice.user_id, "m1", 1), edu("@mallory:elsewhere.example", "m2", 2)])
    # Its own user is: once, however often the same message ID comes.
    _send_edus(peer, ours, [edu(peer.user("eve"), "m3", 3), edu(peer.user("eve"), "m3", 3)])
    _send_edus(peer, ours, [edu(peer.user("eve"), "m3", 3)])
    events = wait_for(lambda: to_device_events(alice, state, "m.forged"), what="the peer's own to-device message")
    assert [(e["sender"], e["content"]) for e in events] == [(peer.user("eve"), {"n": 3})]
    assert to_device_events(alice, state, "m.forged") == []


def test_federation_key_endpoints_refuse_bad_input(ours: ServerProcess, peer: FakePeer) -> None:
    assert ours.federation_port is not None
    alice = Side.ours(register_user(ours.base_url))
    alice.upload_keys(one_time=1)

    def call(method: str, path: str, content: Any = None) -> httpx.Response:
        return peer.request(method, ours.server_name, ours.federation_port, path, content)

    # Well-formed: our user's devices, keys and one-time key.
    devices = call("GET", f"{FED_V1}/user/devices/{quote(alice.user_id)}")
    assert devices.status_code == 200, devices.text
    body = devices.json()
    assert body["user_id"] == alice.user_id and isinstance(body["stream_id"], int)
    assert [d["device_id"] for d in body["devices"]] == [alice.device_id]
    query = call("POST", f"{FED_V1}/user/keys/query", {"device_keys": {alice.user_id: []}})
    assert list(query.json()["device_keys"][alice.user_id]) == [alice.device_id]
    claim = call("POST", f"{FED_V1}/user/keys/claim", {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
    assert list(claim.json()["one_time_keys"][alice.user_id]) == [alice.device_id]

    # Not our user.
    other = peer.user("eve")
    for response in (
        call("GET", f"{FED_V1}/user/devices/{quote(other)}"),
        call("POST", f"{FED_V1}/user/keys/query", {"device_keys": {other: []}}),
        call("POST", f"{FED_V1}/user/keys/claim", {"one_time_keys": {other: {"D": "signed_curve25519"}}}),
    ):
        assert response.status_code == 400 and response.json()["errcode"] == "M_INVALID_PARAM", response.text
    # Malformed bodies.
    for path, content in (
        ("/user/keys/query", {"device_keys": "nope"}),
        ("/user/keys/query", {"device_keys": {alice.user_id: [1]}}),
        ("/user/keys/query", []),
        ("/user/keys/claim", {"one_time_keys": {alice.user_id: {"D": 5}}}),
        ("/user/keys/claim", {}),
    ):
        response = call("POST", FED_V1 + path, content)
        assert response.status_code == 400, response.text
        assert response.json()["errcode"] in ("M_BAD_JSON", "M_NOT_JSON"), response.text
    # Not JSON at all.
    path = f"{FED_V1}/user/keys/query"
    header = authorization_header("POST", path, peer.server_name, ours.server_name, None, peer.signing_key)
    response = httpx.post(
        f"https://127.0.0.1:{ours.federation_port}{path}",
        content=b"{not json",
        headers={"Authorization": header, "Content-Type": "application/json"},
        verify=False,
    )
    assert response.status_code == 400 and response.json()["errcode"] == "M_NOT_JSON"
    # Unsigned.
    response = httpx.get(f"https://127.0.0.1:{ours.federation_port}{FED_V1}/user/devices/{quote(alice.user_id)}", verify=False)
    assert response.status_code == 401
