"""The E2EE key server over HTTP: key upload/query/claim, fallback keys, device-list
tracking in /sync and /keys/changes, cross-signing with UIA, signatures and key backup."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from tests.conftest import V3, User
from tests.test_sync import create_room, join, shared_room, sync


def device_keys(user: User, key: Any = None) -> dict[str, Any]:
    key = key or generate_signing_key(user.device_id)
    public = encode_base64(get_verify_key(key).encode())
    body = {
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{user.device_id}": "curvekey", f"ed25519:{user.device_id}": public},
    }
    return sign_json(body, user.user_id, key)


def otk(n: int) -> dict[str, Any]:
    return {f"signed_curve25519:K{i}": {"key": f"otk{i}", "signatures": {}} for i in range(n)}


def test_upload_query_claim_each_key_once_then_fallback(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    keys = device_keys(alice)
    response = alice.api.post(f"{V3}/keys/upload", json={"device_keys": keys, "one_time_keys": otk(2)})
    assert response.status_code == 200
    assert response.json()["one_time_key_counts"] == {"signed_curve25519": 2}
    # Re-uploading the same keys is fine; a different key under a used ID is not.
    assert alice.api.post(f"{V3}/keys/upload", json={"one_time_keys": otk(2)}).json()["one_time_key_counts"] == {
        "signed_curve25519": 2
    }
    conflict = {"one_time_keys": {"signed_curve25519:K0": {"key": "other"}}}
    assert alice.api.post(f"{V3}/keys/upload", json=conflict).status_code == 400
    wrong_device = dict(keys, device_id="NOTME")
    assert alice.api.post(f"{V3}/keys/upload", json={"device_keys": wrong_device}).status_code == 400

    queried = bob.api.post(f"{V3}/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    got = queried["device_keys"][alice.user_id][alice.device_id]
    assert got["keys"] == keys["keys"] and got["signatures"] == keys["signatures"]
    assert "device_display_name" in got["unsigned"] or got["unsigned"] == {}

    claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    first = bob.api.post(f"{V3}/keys/claim", json=claim).json()["one_time_keys"][alice.user_id][alice.device_id]
    second = bob.api.post(f"{V3}/keys/claim", json=claim).json()["one_time_keys"][alice.user_id][alice.device_id]
    assert set(first) | set(second) == {"signed_curve25519:K0", "signed_curve25519:K1"}
    assert bob.api.post(f"{V3}/keys/claim", json=claim).json()["one_time_keys"] == {}
    assert sync(alice)["device_one_time_keys_count"]["signed_curve25519"] == 0

    fallback = {"fallback_keys": {"signed_curve25519:F1": {"key": "fb", "fallback": True, "signatures": {}}}}
    assert alice.api.post(f"{V3}/keys/upload", json=fallback).status_code == 200
    assert sync(alice)["device_unused_fallback_key_types"] == ["signed_curve25519"]
    for _ in range(2):  # handed out again and again, but marked used
        again = bob.api.post(f"{V3}/keys/claim", json=claim).json()["one_time_keys"][alice.user_id][alice.device_id]
        assert list(again) == ["signed_curve25519:F1"]
    assert sync(alice)["device_unused_fallback_key_types"] == []


def test_device_lists_in_sync_and_keys_changes(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    bob_token = sync(bob)["next_batch"]
    carol_token = sync(carol)["next_batch"]
    alice.api.post(f"{V3}/keys/upload", json={"device_keys": device_keys(alice)})
    response = sync(bob, bob_token, timeout=5000)
    assert alice.user_id in response["device_lists"]["changed"]
    assert alice.user_id not in sync(carol, carol_token)["device_lists"]["changed"]
    changes = bob.api.get(f"{V3}/keys/changes", params={"from": bob_token, "to": response["next_batch"]}).json()
    assert alice.user_id in changes["changed"]

    # Someone joining a room you are in: changed; leaving the last shared room: left.
    token = response["next_batch"]
    join(carol, room_id)
    after_join = sync(bob, token)
    assert carol.user_id in after_join["device_lists"]["changed"]
    token = after_join["next_batch"]
    assert carol.api.post(f"{V3}/rooms/{room_id}/leave", json={}).status_code == 200
    assert carol.user_id in sync(bob, token)["device_lists"]["left"]
    assert bob.api.get(f"{V3}/keys/changes", params={"from": "bogus", "to": token}).status_code == 400


def test_deleting_a_device_removes_its_keys_and_is_announced(new_user: Callable[..., User], server: Any) -> None:
    from tests.test_typing_receipts import _second_device

    alice, bob = new_user(), new_user()
    shared_room(alice, bob)
    device_id, api = _second_device(server.base_url, alice)
    second = User(alice.user_id, alice.password, "", device_id, api)
    api.post(f"{V3}/keys/upload", json={"device_keys": device_keys(second)})
    token = sync(bob)["next_batch"]
    queried = bob.api.post(f"{V3}/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert device_id in queried["device_keys"][alice.user_id]
    assert api.post(f"{V3}/logout", json={}).status_code == 200
    assert alice.user_id in sync(bob, token)["device_lists"]["changed"]
    queried = bob.api.post(f"{V3}/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert device_id not in queried["device_keys"][alice.user_id]


def _cross_signing_key(user: User, usage: str, key: Any, signer: Any = None) -> dict[str, Any]:
    public = encode_base64(get_verify_key(key).encode())
    body = {"user_id": user.user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}
    if signer is not None:
        body = sign_json(body, user.user_id, signer)
    return body


def _key_named(key: Any) -> Any:
    public = encode_base64(get_verify_key(key).encode())
    key.version = public
    key.alg = "ed25519"
    return key


def test_cross_signing_upload_uia_and_signatures(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    shared_room(alice, bob)
    device_key = generate_signing_key(alice.device_id)
    alice.api.post(f"{V3}/keys/upload", json={"device_keys": device_keys(alice, device_key)})
    master = _key_named(generate_signing_key("m"))
    self_signing = _key_named(generate_signing_key("s"))
    user_signing = _key_named(generate_signing_key("u"))
    body = {
        "master_key": _cross_signing_key(alice, "master", master),
        "self_signing_key": _cross_signing_key(alice, "self_signing", self_signing, master),
        "user_signing_key": _cross_signing_key(alice, "user_signing", user_signing, master),
    }
    # The first upload needs no UIA; the same keys again neither.
    assert alice.api.post(f"{V3}/keys/device_signing/upload", json=body).status_code == 200
    assert alice.api.post(f"{V3}/keys/device_signing/upload", json=body).status_code == 200
    # A subkey not signed by the master key is refused.
    unsigned = {"self_signing_key": _cross_signing_key(alice, "self_signing", _key_named(generate_signing_key("x")))}
    challenge = alice.api.post(f"{V3}/keys/device_signing/upload", json=unsigned)
    assert challenge.status_code == 401
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": alice.password,
        "session": challenge.json()["session"],
    }
    assert alice.api.post(f"{V3}/keys/device_signing/upload", json={**unsigned, "auth": auth}).status_code == 400
    # Replacing keys needs the password.
    new_master = _key_named(generate_signing_key("m2"))
    replace = {"master_key": _cross_signing_key(alice, "master", new_master)}
    challenge = alice.api.post(f"{V3}/keys/device_signing/upload", json=replace)
    assert challenge.status_code == 401 and challenge.json()["flows"]
    bad = dict(auth, password="wrong", session=challenge.json()["session"])
    assert alice.api.post(f"{V3}/keys/device_signing/upload", json={**replace, "auth": bad}).status_code == 401

    queried = bob.api.post(f"{V3}/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert "master_keys" in queried, queried
    assert queried["master_keys"][alice.user_id]["keys"] == body["master_key"]["keys"]
    assert alice.user_id in queried["self_signing_keys"]
    assert alice.user_id not in queried.get("user_signing_keys", {})
    own = alice.api.post(f"{V3}/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert alice.user_id in own["user_signing_keys"]

    # Sign the device with the self-signing key; everyone sees the signature.
    stored_device = copy.deepcopy(own["device_keys"][alice.user_id][alice.device_id])
    stored_device.pop("unsigned", None)
    signed_device = sign_json({k: v for k, v in stored_device.items() if k != "signatures"}, alice.user_id, self_signing)
    upload = {alice.user_id: {alice.device_id: signed_device}}
    result = alice.api.post(f"{V3}/keys/signatures/upload", json=upload)
    assert result.status_code == 200 and result.json()["failures"] == {}
    queried = bob.api.post(f"{V3}/keys/query", json={"device_keys": {alice.user_id: [alice.device_id]}}).json()
    signatures = queried["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert f"ed25519:{self_signing.version}" in signatures
    # A forged signature is reported as a failure and not stored.
    forged = sign_json(
        {k: v for k, v in stored_device.items() if k != "signatures"}, alice.user_id, _key_named(generate_signing_key("z"))
    )
    forged["signatures"][alice.user_id] = {f"ed25519:{self_signing.version}": next(iter(forged["signatures"][alice.user_id].values()))}
    result = alice.api.post(f"{V3}/keys/signatures/upload", json={alice.user_id: {alice.device_id: forged}}).json()
    assert alice.device_id in result["failures"][alice.user_id]


def test_key_backup_versions_and_keys(new_user: Callable[..., User]) -> None:
    user = new_user()
    assert user.api.get(f"{V3}/room_keys/version").status_code == 404
    algorithm = "m.megolm_backup.v1.curve25519-aes-sha2"
    created = user.api.post(f"{V3}/room_keys/version", json={"algorithm": algorithm, "auth_data": {"public_key": "abc"}})
    assert created.status_code == 200
    version = created.json()["version"]
    current = user.api.get(f"{V3}/room_keys/version").json()
    assert current["version"] == version and current["count"] == 0 and current["auth_data"] == {"public_key": "abc"}

    session = {"first_message_index": 5, "forwarded_count": 0, "is_verified": False, "session_data": {"ciphertext": "c1"}}
    path = f"{V3}/room_keys/keys/!room:example.org/sess1"
    put = user.api.put(path, params={"version": version}, json=session)
    assert put.status_code == 200 and put.json()["count"] == 1
    # A worse key does not replace a better one; a better one does.
    worse = dict(session, first_message_index=9, session_data={"ciphertext": "worse"})
    user.api.put(path, params={"version": version}, json=worse)
    assert user.api.get(path, params={"version": version}).json()["session_data"] == {"ciphertext": "c1"}
    better = dict(session, first_message_index=1, session_data={"ciphertext": "better"})
    user.api.put(path, params={"version": version}, json=better)
    assert user.api.get(path, params={"version": version}).json()["session_data"] == {"ciphertext": "better"}
    everything = user.api.get(f"{V3}/room_keys/keys", params={"version": version}).json()
    assert list(everything["rooms"]["!room:example.org"]["sessions"]) == ["sess1"]
    bulk = {"rooms": {"!other:example.org": {"sessions": {"s2": session, "s3": session}}}}
    assert user.api.put(f"{V3}/room_keys/keys", params={"version": version}, json=bulk).json()["count"] == 3

    # A new version makes the old one read-only for uploads.
    newer = user.api.post(f"{V3}/room_keys/version", json={"algorithm": algorithm, "auth_data": {}}).json()["version"]
    stale = user.api.put(path, params={"version": version}, json=session)
    assert stale.status_code == 403 and stale.json()["errcode"] == "M_WRONG_ROOM_KEYS_VERSION"
    assert stale.json()["current_version"] == newer
    assert user.api.get(f"{V3}/room_keys/keys/!other:example.org", params={"version": version}).json()["sessions"].keys() == {"s2", "s3"}
    deleted = user.api.delete(f"{V3}/room_keys/keys/!other:example.org", params={"version": version})
    assert deleted.status_code == 200 and deleted.json()["count"] == 1

    update = {"algorithm": algorithm, "auth_data": {"public_key": "new"}, "version": newer}
    assert user.api.put(f"{V3}/room_keys/version/{newer}", json=update).status_code == 200
    assert user.api.get(f"{V3}/room_keys/version/{newer}").json()["auth_data"] == {"public_key": "new"}
    assert user.api.put(f"{V3}/room_keys/version/{newer}", json=dict(update, algorithm="other")).status_code == 400
    assert user.api.delete(f"{V3}/room_keys/version/{newer}").status_code == 200
    assert user.api.get(f"{V3}/room_keys/version/{newer}").status_code == 404
    assert user.api.get(f"{V3}/room_keys/version").json()["version"] == version
    assert user.api.get(f"{V3}/room_keys/keys", params={"version": "999"}).status_code == 404
