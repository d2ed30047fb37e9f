"""The end-to-end encryption key server (spec: "End-to-End Encryption"), to-device
messaging and device-list tracking.

Keys are opaque to the server except where it must check them: device keys must name
the uploading user and device; cross-signing keys must be well formed and the
subkeys signed by the master key; uploaded signatures must verify against the key
that claims to have made them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from homeserver.errors import MatrixError
from homeserver.identifiers import split_user_id
from homeserver.sync.tokens import SyncToken
from storage.e2e_keys import KeyConflict

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

CROSS_SIGNING_TYPES = {"master": "master_key", "self_signing": "self_signing_key", "user_signing": "user_signing_key"}


def _bad(error: str, errcode: str = "M_INVALID_PARAM") -> MatrixError:
    return MatrixError(400, errcode, error)


def _public_key(key: dict[str, Any]) -> tuple[str, str]:
    """(key ID, public key) of a cross-signing key."""
    keys = key.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise _bad("A cross-signing key must contain exactly one key")
    key_id, public = next(iter(keys.items()))
    if not isinstance(key_id, str) or not isinstance(public, str) or not key_id.startswith("ed25519:"):
        raise _bad("Cross-signing keys must be ed25519")
    return key_id, public


def _verify(signed: dict[str, Any], signer_user: str, key_id: str, public: str) -> bool:
    try:
        verify_key = decode_verify_key_bytes(key_id, decode_base64(public))
        verify_signed_json(signed, signer_user, verify_key)
        return True
    except (SignatureVerifyException, ValueError, TypeError, KeyError):
        return False


class E2eeService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.keys = hs.e2e_keys
        self._counts: dict[tuple[str, str], tuple[dict[str, int], list[str]]] = {}
        self._acked: dict[tuple[str, str], int] = {}
        # Set when federation is on: other servers' users' keys (federation/e2ee.py,
        # RemoteKeys) and the EDUs that tell other servers of our changes
        # (federation/device_lists.py, DeviceListEdus).
        self.remote: Any = None
        self.remote_edus: Any = None

    def _is_local(self, user_id: str) -> bool:
        parts = split_user_id(user_id)
        return parts is not None and parts[1] == self.hs.server_name

    async def devices_changed(self, user_id: str, position: int | None) -> None:
        """Advance the device-list stream and wake the user and everyone sharing a room."""
        if position is None:
            return
        notifier = self.hs.notifier
        notifier.advance("device_lists", position)
        notifier.wake_users([user_id])
        notifier.wake_rooms(await self.hs.sync_cache.joined_room_ids(user_id))

    # --- upload / query / claim ------------------------------------------------------

    async def upload(self, user_id: str, device_id: str, body: dict[str, Any]) -> dict[str, int]:
        device_keys = body.get("device_keys")
        one_time = body.get("one_time_keys")
        fallback = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        if device_keys is not None:
            if not isinstance(device_keys, dict):
                raise _bad("device_keys must be an object", "M_BAD_JSON")
            if device_keys.get("user_id") != user_id or device_keys.get("device_id") != device_id:
                raise _bad("device_keys must be for the uploading user and device")
            if not isinstance(device_keys.get("keys"), dict) or not isinstance(device_keys.get("algorithms"), list):
                raise _bad("device_keys needs keys and algorithms", "M_BAD_JSON")
            stored = {k: v for k, v in device_keys.items() if k != "unsigned"}
            position = await self.keys.set_device_keys(user_id, device_id, stored)
            await self.devices_changed(user_id, position)
            if position is not None and self.remote_edus is not None:
                await self.remote_edus.local_devices_changed(user_id, [device_id], position)
        try:
            await self.keys.add_one_time_keys(user_id, device_id, self._key_list(one_time, "one_time_keys"))
        except KeyConflict as exc:
            raise _bad(str(exc), "M_INVALID_PARAM") from None
        await self.keys.set_fallback_keys(user_id, device_id, self._key_list(fallback, "fallback_keys"))
        self._counts.pop((user_id, device_id), None)
        counts, _ = await self.key_counts(user_id, device_id)
        return counts

    @staticmethod
    def _key_list(value: Any, name: str) -> list[tuple[str, str, Any]]:
        if value is None:
            return []
        if not isinstance(value, dict):
            raise _bad(f"{name} must be an object", "M_BAD_JSON")
        out = []
        for full_id, key in value.items():
            algorithm, sep, key_id = full_id.partition(":")
            if not sep or not algorithm or not key_id:
                raise _bad(f"Invalid key ID {full_id!r} in {name}")
            if not isinstance(key, (dict, str)):
                raise _bad(f"Invalid key {full_id!r} in {name}", "M_BAD_JSON")
            out.append((algorithm, key_id, key))
        return out

    async def key_counts(self, user_id: str, device_id: str) -> tuple[dict[str, int], list[str]]:
        cached = self._counts.get((user_id, device_id))
        if cached is None:
            cached = (
                await self.keys.one_time_key_counts(user_id, device_id),
                await self.keys.unused_fallback_key_types(user_id, device_id),
            )
            self._counts[(user_id, device_id)] = cached
        return dict(cached[0]), list(cached[1])

    async def query(self, requester: str, device_keys: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        response: dict[str, Any] = {
            "device_keys": {},
            "failures": {},
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }
        users = [u for u in device_keys if self._is_local(u)]
        remote = {u: d for u, d in device_keys.items() if not self._is_local(u)}
        if remote and self.remote is not None:
            found = await self.remote.query(requester, remote, timeout_s)
            for field in ("device_keys", "failures", "master_keys", "self_signing_keys"):
                response[field].update(found[field])
        for user_id in remote if self.remote is None else ():
            parts = split_user_id(user_id)
            if parts is not None:
                response["failures"][parts[1]] = {"status": 503, "message": "Federation key queries are not supported"}
        signatures = await self.keys.signatures_for(users)
        for user_id in users:
            wanted = device_keys[user_id]
            ids = [d for d in wanted if isinstance(d, str)] if isinstance(wanted, list) else []
            found = await self.keys.device_keys(user_id, ids or None)
            names = {d.device_id: d.display_name for d in await self.hs.devices.list_devices(user_id)}
            result: dict[str, Any] = {}
            for device_id, key in found.items():
                if device_id not in names:
                    continue  # deleted device
                key = copy.deepcopy(key)
                self._merge_signatures(key, signatures.get((user_id, device_id), []), requester, user_id)
                key["unsigned"] = {"device_display_name": names[device_id]} if names[device_id] else {}
                result[device_id] = key
            response["device_keys"][user_id] = result
            cross = await self.keys.cross_signing_keys(user_id)
            for key_type, field in CROSS_SIGNING_TYPES.items():
                if key_type not in cross:
                    continue
                if key_type == "user_signing" and user_id != requester:
                    continue
                key = copy.deepcopy(cross[key_type])
                _, public = _public_key(key)
                self._merge_signatures(key, signatures.get((user_id, public), []), requester, user_id)
                response[field + "s"][user_id] = key
        return response

    @staticmethod
    def _merge_signatures(key: dict[str, Any], found: list[tuple[str, str, str]], requester: str, owner: str) -> None:
        for signer, signer_key_id, signature in found:
            # Signatures by others (user-signing a master key) are the signer's own business.
            if signer != owner and signer != requester:
                continue
            key.setdefault("signatures", {}).setdefault(signer, {})[signer_key_id] = signature

    async def claim(self, one_time_keys: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        claimed: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for user_id, devices in one_time_keys.items():
            if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
                raise _bad("one_time_keys must map users to devices to algorithms", "M_BAD_JSON")
        remote = {u: d for u, d in one_time_keys.items() if not self._is_local(u)}
        if remote and self.remote is not None:
            found = await self.remote.claim(remote, timeout_s)
            claimed.update(found["one_time_keys"])
            failures.update(found["failures"])
        for user_id, devices in one_time_keys.items():
            if not self._is_local(user_id):
                if self.remote is not None:
                    continue
                parts = split_user_id(user_id)
                if parts is not None:
                    failures[parts[1]] = {"status": 503, "message": "Federation key claims are not supported"}
                continue
            for device_id, algorithm in devices.items():
                if not isinstance(algorithm, str):
                    raise _bad("Algorithms must be strings", "M_BAD_JSON")
                key = await self.keys.claim(user_id, device_id, algorithm)
                self._counts.pop((user_id, device_id), None)
                if key is not None:
                    claimed.setdefault(user_id, {})[device_id] = {key[0]: key[1]}
        return {"one_time_keys": claimed, "failures": failures}

    # --- device lists ----------------------------------------------------------------

    async def device_list_delta(self, user_id: str, since: SyncToken, now: SyncToken) -> tuple[set[str], set[str]]:
        """Users whose devices the user should re-fetch, and users the user no longer
        shares a room with, between two tokens."""
        queries = self.hs.sync_queries
        changed: set[str] = set()
        left: set[str] = set()
        memberships = await self.hs.sync_cache.memberships(user_id) if since.room < now.room else []
        rooms = [m.room_id for m in memberships if m.membership in ("join", "leave", "ban")]
        if since.room < now.room and await self.hs.sync_cache.membership_changed_since(rooms, since.room):
            joined_now = [m.room_id for m in memberships if m.membership == "join"]
            newly_joined = [m.room_id for m in memberships if m.membership == "join" and since.room < m.stream_ordering]
            newly_left = [
                m.room_id
                for m in memberships
                if m.membership in ("leave", "ban") and since.room < m.stream_ordering <= now.room
            ]
            for change in await queries.membership_changes([*joined_now, *newly_left], since.room, now.room):
                if change.user_id == user_id:
                    continue
                if change.membership == "join":
                    changed.add(change.user_id)
                elif change.membership in ("leave", "ban"):
                    left.add(change.user_id)
            for room_id in newly_joined:
                changed |= set(await queries.joined_members(room_id))
            for room_id in newly_left:
                left |= set(await queries.joined_members(room_id))
            changed.discard(user_id)
            left.discard(user_id)
        key_changes: set[str] = set()
        if since.device_lists < now.device_lists:
            key_changes = await self.keys.changed_users(since.device_lists, now.device_lists)
        if not changed and not left and not key_changes:
            return set(), set()
        sharing = await queries.users_sharing_rooms(user_id)
        changed = (changed | key_changes) & sharing
        left -= sharing
        return changed, left

    # --- cross-signing ---------------------------------------------------------------

    async def upload_cross_signing(
        self, user_id: str, body: dict[str, Any], require_auth: Any
    ) -> None:
        """`require_auth()` runs UIA; it is skipped for a first upload or an identical one."""
        existing = await self.keys.cross_signing_keys(user_id)
        new: dict[str, dict[str, Any]] = {}
        for key_type, field in CROSS_SIGNING_TYPES.items():
            key = body.get(field)
            if key is None:
                continue
            if not isinstance(key, dict):
                raise _bad(f"{field} must be an object", "M_BAD_JSON")
            if key.get("user_id") != user_id:
                raise _bad(f"{field} must belong to the uploading user")
            usage = key.get("usage")
            if not isinstance(usage, list) or key_type not in usage:
                raise _bad(f"{field} must have usage {key_type!r}")
            _public_key(key)
            new[key_type] = key
        if not new:
            return
        if "master" in existing and any(existing.get(t) != k for t, k in new.items()):
            await require_auth()
        elif "master" not in existing and "master" not in new:
            raise _bad("Upload a master key first")
        master = new.get("master", existing.get("master"))
        assert master is not None
        master_id, master_public = _public_key(master)
        for key_type in ("self_signing", "user_signing"):
            if key_type in new and not _verify(new[key_type], user_id, master_id, master_public):
                raise _bad(f"The {key_type} key is not signed by the master key", "M_INVALID_SIGNATURE")
        if all(existing.get(t) == k for t, k in new.items()):
            return
        await self.devices_changed(user_id, await self.keys.set_cross_signing_keys(user_id, new))
        if self.remote_edus is not None:
            await self.remote_edus.local_signing_keys_changed(user_id)

    async def upload_signatures(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        failures: dict[str, dict[str, Any]] = {}
        rows: list[tuple[str, str, str, str]] = []
        own = await self.keys.cross_signing_keys(user_id)
        for target_user, objects in body.items():
            if not isinstance(objects, dict):
                raise _bad("Signed objects must be grouped by user", "M_BAD_JSON")
            for target_key_id, signed in objects.items():
                try:
                    rows.extend(await self._check_signature(user_id, own, target_user, target_key_id, signed))
                except MatrixError as exc:
                    failures.setdefault(target_user, {})[target_key_id] = {"errcode": exc.errcode, "error": exc.error}
        position = await self.keys.add_signatures(user_id, rows)
        for target in {r[1] for r in rows}:
            await self.devices_changed(target, position)
        if position is not None and self.remote_edus is not None:
            # Our own devices' keys now carry a new signature: other servers re-read them.
            own_devices = {d.device_id for d in await self.hs.devices.list_devices(user_id)}
            signed = sorted({r[2] for r in rows if r[1] == user_id and r[2] in own_devices})
            if signed:
                await self.remote_edus.local_devices_changed(user_id, signed, position)
        return {"failures": failures}

    async def _check_signature(
        self, signer: str, own: dict[str, dict[str, Any]], target_user: str, target_key_id: str, signed: Any
    ) -> list[tuple[str, str, str, str]]:
        if not isinstance(signed, dict):
            raise MatrixError(400, "M_BAD_JSON", "Signed object must be an object")
        sigs = signed.get("signatures", {}).get(signer) if isinstance(signed.get("signatures"), dict) else None
        if not isinstance(sigs, dict) or not sigs:
            raise MatrixError(400, "M_INVALID_SIGNATURE", "No signature by the uploading user")
        # What is being signed: a device of the target, or one of their cross-signing keys.
        stored: dict[str, Any] | None = None
        if target_user == signer:
            devices = await self.keys.device_keys(signer, [target_key_id])
            stored = devices.get(target_key_id)
            if stored is not None:
                signing_key = own.get("self_signing")
            else:
                master = own.get("master")
                if master is not None and _public_key(master)[1] == target_key_id:
                    stored = master
                signing_key = None  # the master key is signed by one of the user's devices
        else:
            target_master = (await self.keys.cross_signing_keys(target_user)).get("master")
            if target_master is not None and _public_key(target_master)[1] == target_key_id:
                stored = target_master
            signing_key = own.get("user_signing")
        if stored is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown key to sign")
        rows = []
        for signer_key_id, signature in sigs.items():
            if not isinstance(signature, str):
                raise MatrixError(400, "M_INVALID_SIGNATURE", "Signatures must be strings")
            candidate = {k: v for k, v in stored.items() if k not in ("signatures", "unsigned")}
            candidate["signatures"] = {signer: {signer_key_id: signature}}
            public = self._signer_public(signer_key_id, signing_key)
            if public is None and signing_key is None:
                # A device signing its user's master key.
                device_id = signer_key_id.partition(":")[2]
                device = (await self.keys.device_keys(signer, [device_id])).get(device_id)
                public = device.get("keys", {}).get(signer_key_id) if device else None
            if public is None or not _verify(candidate, signer, signer_key_id, public):
                raise MatrixError(400, "M_INVALID_SIGNATURE", "Invalid signature")
            rows.append((signer_key_id, target_user, target_key_id, signature))
        return rows

    @staticmethod
    def _signer_public(signer_key_id: str, signing_key: dict[str, Any] | None) -> str | None:
        if signing_key is None:
            return None
        key_id, public = _public_key(signing_key)
        return public if key_id == signer_key_id else None

    # --- to-device -------------------------------------------------------------------

    async def send_to_device(
        self, sender: str, sender_device: str, event_type: str, txn_id: str, messages: dict[str, Any]
    ) -> None:
        for by_device in messages.values():
            if not isinstance(by_device, dict) or not all(isinstance(c, dict) for c in by_device.values()):
                raise _bad("messages must map users to devices to content objects", "M_BAD_JSON")
        remote = {u: m for u, m in messages.items() if not self._is_local(u) and split_user_id(u) is not None}
        local = {u: m for u, m in messages.items() if self._is_local(u)}
        await self.deliver_to_device(sender, event_type, local, (sender, sender_device, txn_id))
        if remote and self.remote is not None:
            # A retried request is sent again with the same message ID (derived from
            # the transaction ID), which the receiving server deduplicates.
            self.remote.send_to_device(sender, sender_device, event_type, txn_id, remote)

    async def deliver_to_device(
        self, sender: str, event_type: str, messages: dict[str, Any], txn: tuple[str, str, str]
    ) -> None:
        """Queue messages for local devices ('*': all of a user's devices), once per
        `txn` (sender, sender device, transaction ID)."""
        triples: list[tuple[str, str, dict[str, Any]]] = []
        for user_id, by_device in messages.items():
            known = [d.device_id for d in await self.hs.devices.list_devices(user_id)]
            for device_id, content in by_device.items():
                targets = known if device_id == "*" else [device_id] if device_id in known else []
                for target in targets:
                    triples.append((user_id, target, {"type": event_type, "sender": sender, "content": content}))
        position = await self.hs.to_device.send(triples, txn, int(time.time() * 1000))
        if position is not None:
            self.hs.notifier.advance("to_device", position)
            self.hs.notifier.wake_users({t[0] for t in triples})

    async def acknowledge_to_device(self, user_id: str, device_id: str, upto: int) -> None:
        key = (user_id, device_id)
        if self._acked.get(key, -1) >= upto:
            return
        await self.hs.to_device.acknowledge(user_id, device_id, upto)
        self._acked[key] = upto

    async def devices_deleted(self, user_id: str, device_ids: Iterable[str]) -> None:
        ids = list(device_ids)
        if not ids:
            return
        position = await self.keys.delete_devices(user_id, ids)
        await self.hs.to_device.delete_device(user_id, ids)
        for device_id in ids:
            self._counts.pop((user_id, device_id), None)
            self._acked.pop((user_id, device_id), None)
        await self.devices_changed(user_id, position)
        if self.remote_edus is not None:
            await self.remote_edus.local_devices_changed(user_id, ids, position, deleted=True)

    async def device_renamed(self, user_id: str, device_id: str) -> None:
        """A new display name is part of the device list other users see."""
        position = await self.keys.mark_changed([user_id])
        await self.devices_changed(user_id, position)
        if self.remote_edus is not None:
            await self.remote_edus.local_devices_changed(user_id, [device_id], position)
