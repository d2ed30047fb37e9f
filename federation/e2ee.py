"""End-to-end encryption across servers (spec: Server-Server API, "End-to-End
Encryption" and "Device Management").

Serving: `GET /user/devices/{userId}`, `POST /user/keys/query` and `POST
/user/keys/claim` answer for our own users only, from the same key server the
Client-Server API uses.

Asking: our clients' `/keys/query` and `/keys/claim` for other servers' users fan out
to those servers, one request per server, concurrently, under the client's timeout; a
server that fails or is too slow is listed in `failures`. The device lists of remote
users who share a room with one of ours are cached (storage/remote_devices.py) and kept
current by their server's m.device_list_update EDUs (federation/device_lists.py), so a
repeated query does not leave the server; other remote users are asked every time.
To-device messages for remote users leave as m.direct_to_device EDUs.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import weakref
from collections import defaultdict
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from unpaddedbase64 import encode_base64

from federation.client import FederationError
from federation.inbound_auth import authenticate
from homeserver.errors import MatrixError
from homeserver.events import domain_of
from homeserver.http import json_response
from homeserver.identifiers import split_user_id
from storage.remote_devices import RemoteDevice, RemoteDeviceList, RemoteDeviceStore

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
DEFAULT_TIMEOUT_S = 10.0
# Remote answers are bounded so one server cannot make us store or relay without limit.
MAX_REMOTE_DEVICES = 1000

CROSS_SIGNING_FIELDS = ("master_keys", "self_signing_keys")


# --- serving our users to other servers ---------------------------------------------


def _local_user(hs: Any, user_id: Any) -> str:
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_BAD_JSON", "User IDs must be strings")
    parts = split_user_id(user_id)
    if parts is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {user_id!r}")
    if parts[1] != hs.server_name:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a user of this server")
    return user_id


async def user_devices(request: Request) -> Response:
    await authenticate(request)
    hs = request.app.state.hs
    user_id = _local_user(hs, request.path_params["user_id"])
    keys = await hs.e2ee.query("", {user_id: []})
    devices = []
    for device_id, key in keys["device_keys"].get(user_id, {}).items():
        key = dict(key)
        name = key.pop("unsigned", {}).get("device_display_name")
        entry: dict[str, Any] = {"device_id": device_id, "keys": key}
        if name:
            entry["device_display_name"] = name
        devices.append(entry)
    body: dict[str, Any] = {
        "user_id": user_id,
        "stream_id": await hs.federation.e2ee.store.last_local_update(user_id) or 0,
        "devices": devices,
    }
    for field, single in (("master_keys", "master_key"), ("self_signing_keys", "self_signing_key")):
        if user_id in keys[field]:
            body[single] = keys[field][user_id]
    return json_response(body)


async def user_keys_query(request: Request) -> Response:
    _, body = await authenticate(request)
    hs = request.app.state.hs
    if not isinstance(body, dict):
        raise MatrixError(400, "M_NOT_JSON", "Body must be a JSON object")
    device_keys = body.get("device_keys")
    if not isinstance(device_keys, dict) or not all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in device_keys.values()
    ):
        raise MatrixError(400, "M_BAD_JSON", "'device_keys' must map user IDs to lists of device IDs")
    for user_id in device_keys:
        _local_user(hs, user_id)
    found = await hs.e2ee.query("", device_keys)
    return json_response({k: found[k] for k in ("device_keys", "master_keys", "self_signing_keys")})


async def user_keys_claim(request: Request) -> Response:
    _, body = await authenticate(request)
    hs = request.app.state.hs
    if not isinstance(body, dict):
        raise MatrixError(400, "M_NOT_JSON", "Body must be a JSON object")
    one_time_keys = body.get("one_time_keys")
    if not isinstance(one_time_keys, dict) or not all(
        isinstance(v, dict) and all(isinstance(a, str) for a in v.values()) for v in one_time_keys.values()
    ):
        raise MatrixError(400, "M_BAD_JSON", "'one_time_keys' must map users to devices to algorithms")
    for user_id in one_time_keys:
        _local_user(hs, user_id)
    claimed = await hs.e2ee.claim(one_time_keys)
    return json_response({"one_time_keys": claimed["one_time_keys"]})


# --- asking other servers for our clients --------------------------------------------


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, FederationError):
        return {"status": exc.status or 503, "message": str(exc)}
    if isinstance(exc, asyncio.TimeoutError):
        return {"status": 504, "message": "Timed out"}
    return {"status": 503, "message": "Request failed"}


def _device_keys_ok(user_id: str, device_id: str, keys: Any) -> bool:
    return (
        isinstance(keys, dict)
        and keys.get("user_id") == user_id
        and keys.get("device_id") == device_id
        and isinstance(keys.get("keys"), dict)
    )


def _cross_signing_ok(user_id: str, key: Any) -> bool:
    return isinstance(key, dict) and key.get("user_id") == user_id and isinstance(key.get("keys"), dict)


def message_id_for(sender: str, sender_device: str, txn_id: str) -> str:
    """A to-device message ID that is the same for a retried transaction, so the
    receiving server drops the duplicate."""
    digest = hashlib.sha256(f"{sender}\0{sender_device}\0{txn_id}".encode()).digest()
    return encode_base64(digest[:18], urlsafe=True)


class RemoteKeys:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self.store = RemoteDeviceStore(hs.db)
        # One fetch of a user's list at a time: concurrent queries share its result.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def client(self) -> Any:
        return self.hs.federation.client

    async def tracked(self, user_id: str) -> bool:
        """We share a room with the user, so their server tells us of device changes."""
        return await self.store.shares_room_with_local_user(user_id, self.hs.server_name)

    # Device lists

    async def fetch_device_list(self, user_id: str, timeout: float | None = None) -> RemoteDeviceList:
        """GET /user/devices/{userId} from the user's server, cached when tracked."""
        server = domain_of(user_id)
        body = await self.client.request(
            "GET", server, f"{FED_V1}/user/devices/{quote(user_id, safe='')}", timeout=timeout
        )
        if not isinstance(body, dict) or body.get("user_id") != user_id or not isinstance(body.get("devices"), list):
            raise FederationError(server, 200, None, "malformed /user/devices response")
        stream_id = body.get("stream_id")
        found = RemoteDeviceList(
            user_id,
            stream_id if isinstance(stream_id, int) and not isinstance(stream_id, bool) else 0,
            False,
            body.get("master_key") if _cross_signing_ok(user_id, body.get("master_key")) else None,
            body.get("self_signing_key") if _cross_signing_ok(user_id, body.get("self_signing_key")) else None,
        )
        for device in body["devices"][:MAX_REMOTE_DEVICES]:
            if not isinstance(device, dict) or not isinstance(device.get("device_id"), str):
                continue
            device_id = device["device_id"]
            keys = device.get("keys")
            name = device.get("device_display_name")
            found.devices[device_id] = RemoteDevice(
                device_id,
                name if isinstance(name, str) else None,
                keys if _device_keys_ok(user_id, device_id, keys) else None,
            )
        if await self.tracked(user_id):
            await self.store.replace(found)
        return found

    async def cached_device_list(self, user_id: str, timeout: float) -> RemoteDeviceList | None:
        """The cached list when it is known current; else fetched (and cached if we
        share a room); None for an untracked user (ask with /user/keys/query)."""
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        async with lock:
            cached = await self.store.get(user_id)
            if not await self.tracked(user_id):
                if cached is not None:
                    # Nobody tells us about changes any more: the cache cannot be trusted.
                    await self.store.forget(user_id)
                return None
            if cached is not None and not cached.stale:
                return cached
            return await self.fetch_device_list(user_id, timeout)

    # /keys/query

    async def query(self, requester: str, device_keys: dict[str, list[str]], timeout: float | None) -> dict[str, Any]:
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        result: dict[str, Any] = {"device_keys": {}, "failures": {}, "master_keys": {}, "self_signing_keys": {}}
        by_server: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for user_id, devices in device_keys.items():
            parts = split_user_id(user_id)
            if parts is not None:
                by_server[parts[1]][user_id] = devices

        async def one(server: str, users: dict[str, list[str]]) -> None:
            try:
                answer = await asyncio.wait_for(self._query_server(server, users, timeout), timeout)
            except Exception as exc:
                if not isinstance(exc, (FederationError, asyncio.TimeoutError)):
                    logger.warning("Key query to %s failed", server, exc_info=True)
                result["failures"][server] = _failure(exc)
                return
            for field in ("device_keys", *CROSS_SIGNING_FIELDS):
                result[field].update(answer[field])

        await asyncio.gather(*(one(s, u) for s, u in by_server.items()))
        await self._merge_own_signatures(requester, result)
        return result

    async def _query_server(self, server: str, users: dict[str, list[str]], timeout: float) -> dict[str, Any]:
        answer: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        untracked: dict[str, list[str]] = {}
        # Users whose lists are not cached yet are fetched concurrently.
        lists = await asyncio.gather(*(self.cached_device_list(u, timeout) for u in users))
        for (user_id, wanted), device_list in zip(users.items(), lists):
            if device_list is None:
                untracked[user_id] = wanted
                continue
            result: dict[str, Any] = {}
            for device in device_list.devices.values():
                if device.keys is None or (wanted and device.device_id not in wanted):
                    continue
                key = copy.deepcopy(device.keys)
                key["unsigned"] = {"device_display_name": device.display_name} if device.display_name else {}
                result[device.device_id] = key
            answer["device_keys"][user_id] = result
            if device_list.master_key is not None:
                answer["master_keys"][user_id] = device_list.master_key
            if device_list.self_signing_key is not None:
                answer["self_signing_keys"][user_id] = device_list.self_signing_key
        if untracked:
            body = await self.client.request(
                "POST", server, f"{FED_V1}/user/keys/query", content={"device_keys": untracked}, timeout=timeout
            )
            if not isinstance(body, dict):
                raise FederationError(server, 200, None, "malformed /user/keys/query response")
            devices = body.get("device_keys") if isinstance(body.get("device_keys"), dict) else {}
            for user_id in untracked:
                by_device = devices.get(user_id)
                if not isinstance(by_device, dict):
                    continue
                answer["device_keys"][user_id] = {
                    d: k for d, k in list(by_device.items())[:MAX_REMOTE_DEVICES] if _device_keys_ok(user_id, d, k)
                }
                for field in CROSS_SIGNING_FIELDS:
                    keys = body.get(field)
                    if isinstance(keys, dict) and _cross_signing_ok(user_id, keys.get(user_id)):
                        answer[field][user_id] = keys[user_id]
        return answer

    async def _merge_own_signatures(self, requester: str, result: dict[str, Any]) -> None:
        """Signatures our requester made on remote users' master keys (user-signing)."""
        users = list(result["master_keys"])
        if not requester or not users:
            return
        found = await self.hs.e2e_keys.signatures_for(users)
        for user_id in users:
            key = result["master_keys"][user_id] = copy.deepcopy(result["master_keys"][user_id])
            public = next(iter(key["keys"].values()), None)
            for signer, signer_key_id, signature in found.get((user_id, public), []):
                if signer == requester:
                    key.setdefault("signatures", {}).setdefault(signer, {})[signer_key_id] = signature

    # /keys/claim

    async def claim(self, one_time_keys: dict[str, dict[str, str]], timeout: float | None) -> dict[str, Any]:
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        result: dict[str, Any] = {"one_time_keys": {}, "failures": {}}
        by_server: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
        for user_id, devices in one_time_keys.items():
            parts = split_user_id(user_id)
            if parts is not None:
                by_server[parts[1]][user_id] = devices

        async def one(server: str, users: dict[str, dict[str, str]]) -> None:
            try:
                body = await asyncio.wait_for(
                    self.client.request(
                        "POST", server, f"{FED_V1}/user/keys/claim", content={"one_time_keys": users}, timeout=timeout
                    ),
                    timeout,
                )
            except Exception as exc:  # noqa: BLE001
                result["failures"][server] = _failure(exc)
                return
            claimed = body.get("one_time_keys") if isinstance(body, dict) else None
            if not isinstance(claimed, dict):
                result["failures"][server] = {"status": 502, "message": "malformed /user/keys/claim response"}
                return
            for user_id, by_device in claimed.items():
                if user_id not in users or not isinstance(by_device, dict):
                    continue
                keys = {d: k for d, k in by_device.items() if d in users[user_id] and isinstance(k, dict)}
                if keys:
                    result["one_time_keys"][user_id] = keys

        await asyncio.gather(*(one(s, u) for s, u in by_server.items()))
        return result

    # To-device

    def send_to_device(
        self, sender: str, sender_device: str, event_type: str, txn_id: str, messages: dict[str, dict[str, Any]]
    ) -> None:
        by_server: dict[str, dict[str, Any]] = defaultdict(dict)
        for user_id, by_device in messages.items():
            parts = split_user_id(user_id)
            if parts is not None:
                by_server[parts[1]][user_id] = by_device
        message_id = message_id_for(sender, sender_device, txn_id)
        for server, users in by_server.items():
            content = {"sender": sender, "type": event_type, "message_id": message_id, "messages": users}
            self.hs.federation.sender.send_edu({server}, "m.direct_to_device", content)
