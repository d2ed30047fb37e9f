"""The admin API for server admins (`users.is_admin`), on the paths and in the shapes
of Synapse's admin API so that its tools work, plus the spec's whois endpoint.

Every route authenticates first and answers 403 M_FORBIDDEN to non-admins before it
looks at anything else, so the API reveals nothing to them.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from homeserver.auth import Requester, require_user
from homeserver.errors import MatrixError, forbidden
from homeserver.http import json_response, query_bool, query_int, read_json

ADMIN_V1 = "/_synapse/admin/v1"
ADMIN_V2 = "/_synapse/admin/v2"
CLIENT_V3 = "/_matrix/client/v3"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def _is_admin_now(request: Request, user_id: str) -> bool:
    # Read from the database, not the token cache: the admin flag may have just been
    # changed by `homeserver admin` in another process, and admin calls are rare.
    user = await request.app.state.hs.accounts.get_user(user_id)
    return user is not None and user.is_admin and not user.deactivated


async def require_admin(request: Request) -> Requester:
    requester = await require_user(request)
    if not await _is_admin_now(request, requester.user_id):
        raise forbidden("You are not a server admin")
    return requester


def _admin(request: Request) -> Any:
    return request.app.state.hs.admin


def _page(request: Request, default_limit: int = DEFAULT_LIMIT) -> tuple[int, int]:
    offset = query_int(request, "from", 0)
    limit = query_int(request, "limit", default_limit)
    assert offset is not None and limit is not None
    if offset < 0 or limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "from and limit must not be negative")
    return offset, min(limit, MAX_LIMIT)


def _optional_bool(request: Request, name: str) -> bool | None:
    if request.query_params.get(name) is None:
        return None
    return query_bool(request, name)


def _direction(request: Request, default: str) -> bool:
    """True for backwards (dir=b)."""
    value = request.query_params.get("dir", default)
    if value not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
    return value == "b"


# --- server ----------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("homeserver")
    except importlib.metadata.PackageNotFoundError:
        return "0"


async def server_version(request: Request) -> Response:
    await require_admin(request)
    return json_response({"server_version": _version()})


# --- users -----------------------------------------------------------------------


async def list_users(request: Request) -> Response:
    await require_admin(request)
    offset, limit = _page(request)
    if request.query_params.get("guests") is not None:
        query_bool(request, "guests")  # there are no guests; validate only
    body = await _admin(request).list_users(
        offset=offset,
        limit=limit,
        name=request.query_params.get("name") or None,
        user_id=request.query_params.get("user_id") or None,
        deactivated=query_bool(request, "deactivated", False),
        admins=_optional_bool(request, "admins"),
    )
    return json_response(body)


async def get_user(request: Request) -> Response:
    await require_admin(request)
    return json_response(await _admin(request).user_info(request.path_params["user_id"]))


async def put_user(request: Request) -> Response:
    await require_admin(request)
    body = await read_json(request)
    user, created = await _admin(request).put_user(request.path_params["user_id"], body)
    return json_response(user, 201 if created else 200)


async def get_user_admin(request: Request) -> Response:
    await require_admin(request)
    user = await _admin(request).existing_user(request.path_params["user_id"])
    return json_response({"admin": user.is_admin})


async def put_user_admin(request: Request) -> Response:
    requester = await require_admin(request)
    body = await read_json(request)
    admin = body.get("admin")
    if not isinstance(admin, bool):
        raise MatrixError(400, "M_BAD_JSON", "admin must be true or false")
    user_id = request.path_params["user_id"]
    if user_id == requester.user_id and not admin:
        raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself")
    await _admin(request).set_admin(user_id, admin)
    return json_response({})


async def deactivate(request: Request) -> Response:
    await require_admin(request)
    body = await read_json(request, allow_empty=True)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise MatrixError(400, "M_BAD_JSON", "erase must be true or false")
    await _admin(request).deactivate(request.path_params["user_id"], erase=erase)
    return json_response({"id_server_unbind_result": "success"})


async def reset_password(request: Request) -> Response:
    await require_admin(request)
    body = await read_json(request)
    new_password = body.get("new_password")
    if new_password is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: new_password")
    if not isinstance(new_password, str) or not new_password:
        raise MatrixError(400, "M_BAD_JSON", "new_password must be a non-empty string")
    logout = body.get("logout_devices", True)
    if not isinstance(logout, bool):
        raise MatrixError(400, "M_BAD_JSON", "logout_devices must be true or false")
    await _admin(request).reset_password(request.path_params["user_id"], new_password, logout_devices=logout)
    return json_response({})


async def whois(request: Request) -> Response:
    requester = await require_user(request)
    user_id = request.path_params["user_id"]
    # The spec lets users look themselves up; anyone else needs to be an admin.
    if user_id != requester.user_id and not await _is_admin_now(request, requester.user_id):
        raise forbidden("You are not a server admin")
    return json_response(await _admin(request).whois(user_id))


async def quarantine_user_media(request: Request) -> Response:
    requester = await require_admin(request)
    count = await _admin(request).quarantine_user_media(requester.user_id, request.path_params["user_id"])
    return json_response({"num_quarantined": count})


# --- rooms -----------------------------------------------------------------------


async def list_rooms(request: Request) -> Response:
    await require_admin(request)
    offset, limit = _page(request)
    body = await _admin(request).list_rooms(
        offset=offset,
        limit=limit,
        order_by=request.query_params.get("order_by", "name"),
        backwards=_direction(request, "f"),
        search_term=request.query_params.get("search_term") or None,
        public=_optional_bool(request, "public_rooms"),
        empty=_optional_bool(request, "empty_rooms"),
    )
    return json_response(body)


async def get_room(request: Request) -> Response:
    await require_admin(request)
    return json_response(await _admin(request).room_details(request.path_params["room_id"]))


async def room_members(request: Request) -> Response:
    await require_admin(request)
    return json_response(await _admin(request).room_members(request.path_params["room_id"]))


async def room_state(request: Request) -> Response:
    requester = await require_admin(request)
    return json_response(
        await _admin(request).room_state(
            requester.user_id, request.path_params["room_id"], request.query_params.get("type")
        )
    )


async def _delete_body(request: Request) -> tuple[bool, bool]:
    body = await read_json(request, allow_empty=True)
    if body.get("new_room_user_id") is not None:
        raise MatrixError(400, "M_INVALID_PARAM", "new_room_user_id is not supported by this server")
    block = body.get("block", False)
    purge = body.get("purge", True)
    for name, value in (("block", block), ("purge", purge), ("force_purge", body.get("force_purge", False))):
        if not isinstance(value, bool):
            raise MatrixError(400, "M_BAD_JSON", f"{name} must be true or false")
    return block, purge


async def delete_room_v1(request: Request) -> Response:
    requester = await require_admin(request)
    block, purge = await _delete_body(request)
    status = await _admin(request).delete_room(requester.user_id, request.path_params["room_id"], block=block, purge=purge)
    return json_response(status.shutdown_room())


async def delete_room_v2(request: Request) -> Response:
    requester = await require_admin(request)
    block, purge = await _delete_body(request)
    status = await _admin(request).delete_room(requester.user_id, request.path_params["room_id"], block=block, purge=purge)
    return json_response({"delete_id": status.delete_id})


async def delete_status_by_room(request: Request) -> Response:
    await require_admin(request)
    room_id = request.path_params["room_id"]
    results = [s.json() for s in _admin(request).deletions.values() if s.room_id == room_id]
    if not results:
        raise MatrixError(404, "M_NOT_FOUND", "No delete task for this room")
    return json_response({"results": results})


async def delete_status_by_id(request: Request) -> Response:
    await require_admin(request)
    status = _admin(request).deletions.get(request.path_params["delete_id"])
    if status is None:
        raise MatrixError(404, "M_NOT_FOUND", "No such delete task")
    return json_response(status.json())


async def get_block(request: Request) -> Response:
    await require_admin(request)
    return json_response(await _admin(request).block_status(request.path_params["room_id"]))


async def put_block(request: Request) -> Response:
    requester = await require_admin(request)
    body = await read_json(request)
    block = body.get("block")
    if not isinstance(block, bool):
        raise MatrixError(400, "M_BAD_JSON", "block must be true or false")
    room_id = request.path_params["room_id"]
    if not room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    store = request.app.state.hs.admin_store
    if block:
        from homeserver.admin.service import now_ms

        await store.block_room(room_id, requester.user_id, now_ms())
    else:
        await store.unblock_room(room_id)
    return json_response({"block": block})


async def quarantine_room_media(request: Request) -> Response:
    requester = await require_admin(request)
    count = await _admin(request).quarantine_room_media(requester.user_id, request.path_params["room_id"])
    return json_response({"num_quarantined": count})


# --- media -----------------------------------------------------------------------


async def quarantine_media(request: Request) -> Response:
    requester = await require_admin(request)
    await _admin(request).quarantine_media(
        requester.user_id, request.path_params["server_name"], request.path_params["media_id"]
    )
    return json_response({})


async def unquarantine_media(request: Request) -> Response:
    await require_admin(request)
    await _admin(request).unquarantine_media(request.path_params["server_name"], request.path_params["media_id"])
    return json_response({})


# --- registration tokens ---------------------------------------------------------


async def list_tokens(request: Request) -> Response:
    await require_admin(request)
    return json_response(await _admin(request).list_tokens(_optional_bool(request, "valid")))


async def new_token(request: Request) -> Response:
    await require_admin(request)
    body = await read_json(request, allow_empty=True)
    return json_response(await _admin(request).new_token(body))


async def get_token(request: Request) -> Response:
    await require_admin(request)
    return json_response(await _admin(request).get_token(request.path_params["token"]))


async def update_token(request: Request) -> Response:
    await require_admin(request)
    body = await read_json(request)
    return json_response(await _admin(request).update_token(request.path_params["token"], body))


async def delete_token(request: Request) -> Response:
    await require_admin(request)
    await _admin(request).delete_token(request.path_params["token"])
    return json_response({})


# --- event reports ---------------------------------------------------------------


async def event_reports(request: Request) -> Response:
    await require_admin(request)
    offset, limit = _page(request)
    body = await _admin(request).event_reports(
        offset=offset,
        limit=limit,
        backwards=_direction(request, "b"),
        user_id=request.query_params.get("user_id") or None,
        room_id=request.query_params.get("room_id") or None,
        event_sender=request.query_params.get("event_sender_user_id") or None,
    )
    return json_response(body)


async def event_report(request: Request) -> Response:
    await require_admin(request)
    raw = request.path_params["report_id"]
    if not raw.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "The report_id parameter must be a positive integer")
    return json_response(await _admin(request).event_report(int(raw)))


# --- server notices --------------------------------------------------------------


async def _send_notice(request: Request, txn_id: str | None) -> Response:
    requester = await require_admin(request)
    body = await read_json(request)
    user_id = body.get("user_id")
    content = body.get("content")
    if user_id is None or content is None:
        raise MatrixError(400, "M_MISSING_PARAM", "user_id and content are required")
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_BAD_JSON", "user_id must be a string")
    if not isinstance(content, dict):
        raise MatrixError(400, "M_BAD_JSON", "content must be an object")
    event_type = body.get("type", "m.room.message")
    state_key = body.get("state_key")
    if not isinstance(event_type, str) or (state_key is not None and not isinstance(state_key, str)):
        raise MatrixError(400, "M_BAD_JSON", "type and state_key must be strings")
    event = await request.app.state.hs.notices.send(
        user_id,
        content,
        event_type=event_type,
        state_key=state_key,
        txn_id=f"{requester.user_id}|{txn_id}" if txn_id is not None else None,
    )
    return json_response({"event_id": event.event_id})


async def send_server_notice(request: Request) -> Response:
    return await _send_notice(request, None)


async def send_server_notice_txn(request: Request) -> Response:
    return await _send_notice(request, request.path_params["txn_id"])


def admin_routes() -> list[BaseRoute]:
    v1, v2 = ADMIN_V1, ADMIN_V2
    return [
        Route(f"{v1}/server_version", server_version, methods=["GET"]),
        # Users
        Route(f"{v2}/users", list_users, methods=["GET"]),
        Route(f"{v2}/users/{{user_id}}", get_user, methods=["GET"]),
        Route(f"{v2}/users/{{user_id}}", put_user, methods=["PUT"]),
        Route(f"{v1}/users/{{user_id}}/admin", get_user_admin, methods=["GET"]),
        Route(f"{v1}/users/{{user_id}}/admin", put_user_admin, methods=["PUT"]),
        Route(f"{v1}/deactivate/{{user_id}}", deactivate, methods=["POST"]),
        Route(f"{v1}/reset_password/{{user_id}}", reset_password, methods=["POST"]),
        Route(f"{v1}/whois/{{user_id}}", whois, methods=["GET"]),
        Route(f"{CLIENT_V3}/admin/whois/{{user_id}}", whois, methods=["GET"]),
        Route(f"{v1}/user/{{user_id}}/media/quarantine", quarantine_user_media, methods=["POST"]),
        # Rooms
        Route(f"{v1}/rooms", list_rooms, methods=["GET"]),
        Route(f"{v1}/rooms/{{room_id}}", get_room, methods=["GET"]),
        Route(f"{v1}/rooms/{{room_id}}", delete_room_v1, methods=["DELETE"]),
        Route(f"{v1}/rooms/{{room_id}}/members", room_members, methods=["GET"]),
        Route(f"{v1}/rooms/{{room_id}}/state", room_state, methods=["GET"]),
        Route(f"{v1}/rooms/{{room_id}}/block", get_block, methods=["GET"]),
        Route(f"{v1}/rooms/{{room_id}}/block", put_block, methods=["PUT"]),
        Route(f"{v2}/rooms/delete_status/{{delete_id}}", delete_status_by_id, methods=["GET"]),
        Route(f"{v2}/rooms/{{room_id}}", delete_room_v2, methods=["DELETE"]),
        Route(f"{v2}/rooms/{{room_id}}/delete_status", delete_status_by_room, methods=["GET"]),
        Route(f"{v1}/room/{{room_id}}/media/quarantine", quarantine_room_media, methods=["POST"]),
        Route(f"{v1}/quarantine_media/{{room_id}}", quarantine_room_media, methods=["POST"]),
        # Media
        Route(f"{v1}/media/quarantine/{{server_name}}/{{media_id}}", quarantine_media, methods=["POST"]),
        Route(f"{v1}/media/unquarantine/{{server_name}}/{{media_id}}", unquarantine_media, methods=["POST"]),
        # Registration tokens ("new" before the {token} routes)
        Route(f"{v1}/registration_tokens", list_tokens, methods=["GET"]),
        Route(f"{v1}/registration_tokens/new", new_token, methods=["POST"]),
        Route(f"{v1}/registration_tokens/{{token}}", get_token, methods=["GET"]),
        Route(f"{v1}/registration_tokens/{{token}}", update_token, methods=["PUT"]),
        Route(f"{v1}/registration_tokens/{{token}}", delete_token, methods=["DELETE"]),
        # Event reports
        Route(f"{v1}/event_reports", event_reports, methods=["GET"]),
        Route(f"{v1}/event_reports/{{report_id}}", event_report, methods=["GET"]),
        # Server notices
        Route(f"{v1}/send_server_notice", send_server_notice, methods=["POST"]),
        Route(f"{v1}/send_server_notice/{{txn_id}}", send_server_notice_txn, methods=["PUT"]),
    ]
