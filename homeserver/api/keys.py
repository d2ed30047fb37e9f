"""The E2EE key endpoints: upload, query, claim, changes, cross-signing and
server-side key backup (spec: "End-to-End Encryption", "Server-side key backups")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.api.account import require_password
from homeserver.auth import require_user
from homeserver.errors import MatrixError, not_found
from homeserver.http import json_response, read_json
from homeserver.sync.tokens import SyncToken
from storage.key_backup import BackedUpKey, BackupVersion


async def upload(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_json(request)
    counts = await request.app.state.hs.e2ee.upload(requester.user_id, requester.device_id, body)
    return json_response({"one_time_key_counts": counts})


async def query(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_json(request)
    device_keys = body.get("device_keys")
    if not isinstance(device_keys, dict) or not all(isinstance(v, list) for v in device_keys.values()):
        raise MatrixError(400, "M_BAD_JSON", "'device_keys' must map user IDs to lists of device IDs")
    return json_response(await request.app.state.hs.e2ee.query(requester.user_id, device_keys, _timeout_s(body)))


def _timeout_s(body: dict[str, Any]) -> float | None:
    """The `timeout` (ms) for asking other servers; at most a minute."""
    timeout = body.get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise MatrixError(400, "M_BAD_JSON", "'timeout' must be a non-negative integer")
    return min(timeout, 60_000) / 1000


async def claim(request: Request) -> Response:
    await require_user(request)
    body = await read_json(request)
    one_time_keys = body.get("one_time_keys")
    if not isinstance(one_time_keys, dict):
        raise MatrixError(400, "M_BAD_JSON", "'one_time_keys' must be an object")
    return json_response(await request.app.state.hs.e2ee.claim(one_time_keys, _timeout_s(body)))


async def changes(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    current = hs.notifier.token()
    raw_from, raw_to = request.query_params.get("from"), request.query_params.get("to")
    if not raw_from or not raw_to:
        raise MatrixError(400, "M_MISSING_PARAM", "'from' and 'to' are required")
    start = SyncToken.parse(raw_from, current)
    end = SyncToken.parse(raw_to, current)
    changed, left = await hs.e2ee.device_list_delta(requester.user_id, start, end)
    return json_response({"changed": sorted(changed), "left": sorted(left)})


async def device_signing_upload(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_json(request)
    auth = body.get("auth")

    async def require_auth() -> None:
        await require_password(request, auth, requester.user_id)

    await request.app.state.hs.e2ee.upload_cross_signing(requester.user_id, body, require_auth)
    return json_response({})


async def signatures_upload(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_json(request)
    return json_response(await request.app.state.hs.e2ee.upload_signatures(requester.user_id, body))


# --- key backup -------------------------------------------------------------------


def _version_json(version: BackupVersion, count: int) -> dict[str, Any]:
    return {
        "algorithm": version.algorithm,
        "auth_data": version.auth_data,
        "count": count,
        "etag": str(version.etag),
        "version": str(version.version),
    }


def _version_number(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


async def _backup_body(request: Request) -> tuple[str, dict[str, Any]]:
    body = await read_json(request)
    algorithm = body.get("algorithm")
    auth_data = body.get("auth_data")
    if not isinstance(algorithm, str) or not algorithm:
        raise MatrixError(400, "M_BAD_JSON", "'algorithm' must be a string")
    if not isinstance(auth_data, dict):
        raise MatrixError(400, "M_BAD_JSON", "'auth_data' must be an object")
    return algorithm, auth_data


async def create_backup(request: Request) -> Response:
    requester = await require_user(request)
    algorithm, auth_data = await _backup_body(request)
    version = await request.app.state.hs.key_backup.create_version(requester.user_id, algorithm, auth_data)
    return json_response({"version": str(version)})


async def get_backup(request: Request) -> Response:
    requester = await require_user(request)
    store = request.app.state.hs.key_backup
    raw = request.path_params.get("version")
    number = _version_number(raw) if raw is not None else None
    if raw is not None and number is None:
        raise not_found("Unknown backup version")
    version = await store.get_version(requester.user_id, number)
    if version is None:
        raise not_found("No backup found" if raw is None else "Unknown backup version")
    return json_response(_version_json(version, await store.count(requester.user_id, version.version)))


async def update_backup(request: Request) -> Response:
    requester = await require_user(request)
    store = request.app.state.hs.key_backup
    number = _version_number(request.path_params["version"])
    version = await store.get_version(requester.user_id, number) if number is not None else None
    if version is None:
        raise not_found("Unknown backup version")
    body = await read_json(request)
    if "version" in body and body["version"] != str(version.version):
        raise MatrixError(400, "M_INVALID_PARAM", "The version in the body does not match the path")
    algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
    if algorithm != version.algorithm:
        raise MatrixError(400, "M_INVALID_PARAM", "The algorithm of a backup cannot change")
    if not isinstance(auth_data, dict):
        raise MatrixError(400, "M_BAD_JSON", "'auth_data' must be an object")
    await store.update_version(requester.user_id, version.version, auth_data)
    return json_response({})


async def delete_backup(request: Request) -> Response:
    requester = await require_user(request)
    number = _version_number(request.path_params["version"])
    if number is None or not await request.app.state.hs.key_backup.delete_version(requester.user_id, number):
        raise not_found("Unknown backup version")
    return json_response({})


async def _backup_for_keys(request: Request, writing: bool) -> tuple[str, BackupVersion]:
    requester = await require_user(request)
    store = request.app.state.hs.key_backup
    raw = request.query_params.get("version")
    if raw is None:
        raise MatrixError(400, "M_MISSING_PARAM", "'version' is required")
    number = _version_number(raw)
    version = await store.get_version(requester.user_id, number) if number is not None else None
    if writing:
        current = await store.get_version(requester.user_id)
        if current is None or version is None or current.version != version.version:
            if version is None and current is None:
                raise not_found("Unknown backup version")
            raise MatrixError(
                403,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Wrong backup version",
                current_version=str(current.version) if current else None,
            )
    if version is None:
        raise not_found("Unknown backup version")
    return requester.user_id, version


def _key_data(value: Any) -> tuple[int, int, bool, dict[str, Any]]:
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "Key backup data must be an object")
    first, forwarded, verified, data = (
        value.get("first_message_index"),
        value.get("forwarded_count"),
        value.get("is_verified"),
        value.get("session_data"),
    )
    if not isinstance(first, int) or isinstance(first, bool) or not isinstance(forwarded, int) or isinstance(forwarded, bool):
        raise MatrixError(400, "M_BAD_JSON", "first_message_index and forwarded_count must be integers")
    if not isinstance(verified, bool) or not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", "is_verified must be a boolean and session_data an object")
    return first, forwarded, verified, data


def _sessions(room_id: str, value: Any) -> list[BackedUpKey]:
    if not isinstance(value, dict) or not isinstance(value.get("sessions"), dict):
        raise MatrixError(400, "M_BAD_JSON", "Expected 'sessions'")
    return [BackedUpKey(room_id, session_id, *_key_data(data)) for session_id, data in value["sessions"].items()]


def _key_json(key: BackedUpKey) -> dict[str, Any]:
    return {
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": key.session_data,
    }


async def _etag_and_count(request: Request, user_id: str, version: int) -> dict[str, Any]:
    store = request.app.state.hs.key_backup
    current = await store.get_version(user_id, version)
    return {"etag": str(current.etag if current else 0), "count": await store.count(user_id, version)}


async def get_keys(request: Request) -> Response:
    user_id, version = await _backup_for_keys(request, writing=False)
    room_id = request.path_params.get("room_id")
    session_id = request.path_params.get("session_id")
    keys = await request.app.state.hs.key_backup.get_keys(user_id, version.version, room_id, session_id)
    if session_id is not None:
        if not keys:
            raise not_found("No key for that session")
        return json_response(_key_json(keys[0]))
    if room_id is not None:
        return json_response({"sessions": {k.session_id: _key_json(k) for k in keys}})
    rooms: dict[str, Any] = {}
    for key in keys:
        rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = _key_json(key)
    return json_response({"rooms": rooms})


async def put_keys(request: Request) -> Response:
    user_id, version = await _backup_for_keys(request, writing=True)
    room_id = request.path_params.get("room_id")
    session_id = request.path_params.get("session_id")
    body = await read_json(request)
    if session_id is not None and room_id is not None:
        keys = [BackedUpKey(room_id, session_id, *_key_data(body))]
    elif room_id is not None:
        keys = _sessions(room_id, body)
    else:
        rooms = body.get("rooms")
        if not isinstance(rooms, dict):
            raise MatrixError(400, "M_BAD_JSON", "Expected 'rooms'")
        keys = [key for rid, value in rooms.items() for key in _sessions(rid, value)]
    await request.app.state.hs.key_backup.put_keys(user_id, version.version, keys)
    return json_response(await _etag_and_count(request, user_id, version.version))


async def delete_keys(request: Request) -> Response:
    user_id, version = await _backup_for_keys(request, writing=False)
    await request.app.state.hs.key_backup.delete_keys(
        user_id, version.version, request.path_params.get("room_id"), request.path_params.get("session_id")
    )
    return json_response(await _etag_and_count(request, user_id, version.version))
