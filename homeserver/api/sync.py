"""/sync and the streams that feed it: filters, typing, receipts, read markers, tags,
presence and to-device messages (spec: Client-Server API, "Syncing", "Filtering" and
the modules "Typing Notifications", "Receipts", "Fully read markers", "Room Tagging",
"Presence", "Send-to-Device messaging")."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import Requester, require_user
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.http import json_response, query_bool, query_int, read_json
from homeserver.sync.builder import SyncRequest
from homeserver.sync.filters import SyncFilter
from homeserver.sync.presence import STATES
from homeserver.sync.receipts import record_receipt

MAX_ID_BYTES = 255
RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")


def _own_user(request: Request, requester: Requester, what: str) -> str:
    user_id = request.path_params["user_id"]
    if user_id != requester.user_id:
        raise forbidden(f"You can only {what} for yourself")
    return user_id


def _room_id(request: Request) -> str:
    room_id = request.path_params["room_id"]
    if not room_id.startswith("!") or len(room_id.encode()) > MAX_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    return room_id


async def _require_joined(request: Request, user_id: str, room_id: str) -> None:
    membership = await request.app.state.hs.room_store.get_membership(room_id, user_id)
    if membership is None or membership.membership != "join":
        raise forbidden("You are not in this room")


# --- /sync ------------------------------------------------------------------------


async def sync(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    service = hs.sync
    since = service.parse_since(request.query_params.get("since"))
    sync_filter = await service.load_filter(requester.user_id, request.query_params.get("filter"))
    timeout = query_int(request, "timeout", 0) or 0
    full_state = query_bool(request, "full_state")
    use_state_after = query_bool(request, "use_state_after")
    set_presence = request.query_params.get("set_presence")
    if set_presence is not None and set_presence not in STATES:
        raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
    sync_request = SyncRequest(
        requester.user_id, requester.device_id, since, sync_filter, full_state=full_state, use_state_after=use_state_after
    )
    if not hs.presence.tracks(set_presence):
        # No presence context around a long-poll that would do nothing with it: it
        # is held, with its frames, for as long as the poll waits.
        return json_response(await service.sync(sync_request, timeout))
    async with hs.presence.syncing(requester.user_id, set_presence):
        return json_response(await service.sync(sync_request, timeout))


# --- filters ----------------------------------------------------------------------


async def create_filter(request: Request) -> Response:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "create filters")
    definition = await read_json(request)
    SyncFilter.parse(definition)
    filter_id = await request.app.state.hs.filters.add(user_id, definition)
    return json_response({"filter_id": str(filter_id)})


async def get_filter(request: Request) -> Response:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "read filters")
    raw = request.path_params["filter_id"]
    definition = await request.app.state.hs.filters.get(user_id, int(raw)) if raw.isdigit() and len(raw) <= 18 else None
    if definition is None:
        raise not_found("No such filter")
    return json_response(definition)


# --- typing -----------------------------------------------------------------------


async def typing(request: Request) -> Response:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "set typing notifications")
    room_id = _room_id(request)
    body = await read_json(request)
    is_typing = body.get("typing")
    timeout = body.get("timeout")
    if not isinstance(is_typing, bool):
        raise MatrixError(400, "M_BAD_JSON", "'typing' must be a boolean")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise MatrixError(400, "M_BAD_JSON", "'timeout' must be a non-negative integer")
    await _require_joined(request, user_id, room_id)
    hs = request.app.state.hs
    hs.typing.set_typing(room_id, user_id, is_typing, timeout)
    if hs.federation is not None:
        await hs.federation.edus.typing_changed(room_id, user_id, is_typing, timeout)
    return json_response({})


# --- receipts and read markers ------------------------------------------------------


async def _check_event(request: Request, room_id: str, event_id: str) -> None:
    event = await request.app.state.hs.events.get_event(event_id)
    if event is None or event.room_id != room_id:
        raise not_found("Unknown event")


async def _set_fully_read(request: Request, user_id: str, room_id: str, event_id: str) -> None:
    await request.app.state.hs.account_data.put(user_id, "m.fully_read", {"event_id": event_id}, room_id)


async def _receipt(request: Request, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str) -> None:
    await record_receipt(
        request.app.state.hs, room_id, receipt_type, user_id, thread_id, event_id, {"ts": int(time.time() * 1000)}
    )


async def receipt(request: Request) -> Response:
    requester = await require_user(request)
    room_id = _room_id(request)
    receipt_type = request.path_params["receipt_type"]
    event_id = request.path_params["event_id"]
    if receipt_type not in RECEIPT_TYPES:
        raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported receipt type {receipt_type!r}")
    body = await read_json(request, allow_empty=True)
    thread_id = body.get("thread_id")
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be a non-empty string")
    if thread_id is not None and thread_id != "main" and not thread_id.startswith("$"):
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be 'main' or an event ID")
    if receipt_type == "m.fully_read" and thread_id is not None:
        raise MatrixError(400, "M_INVALID_PARAM", "m.fully_read cannot be threaded")
    await _require_joined(request, requester.user_id, room_id)
    await _check_event(request, room_id, event_id)
    if receipt_type == "m.fully_read":
        await _set_fully_read(request, requester.user_id, room_id, event_id)
    else:
        await _receipt(request, requester.user_id, room_id, receipt_type, event_id, thread_id or "")
    return json_response({})


async def read_markers(request: Request) -> Response:
    requester = await require_user(request)
    room_id = _room_id(request)
    body = await read_json(request)
    wanted = {key: body.get(key) for key in RECEIPT_TYPES if body.get(key) is not None}
    for key, value in wanted.items():
        if not isinstance(value, str) or not value.startswith("$"):
            raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be an event ID")
    await _require_joined(request, requester.user_id, room_id)
    for event_id in wanted.values():
        await _check_event(request, room_id, event_id)
    if "m.fully_read" in wanted:
        await _set_fully_read(request, requester.user_id, room_id, wanted["m.fully_read"])
    for receipt_type in ("m.read", "m.read.private"):
        if receipt_type in wanted:
            await _receipt(request, requester.user_id, room_id, receipt_type, wanted[receipt_type], "")
    return json_response({})


# --- tags -------------------------------------------------------------------------


async def _tags(request: Request) -> tuple[str, str, dict[str, Any]]:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "manage tags")
    room_id = _room_id(request)
    content = await request.app.state.hs.account_data.get(user_id, "m.tag", room_id) or {}
    tags = content.get("tags") if isinstance(content.get("tags"), dict) else {}
    return user_id, room_id, dict(tags)


async def get_tags(request: Request) -> Response:
    _, _, tags = await _tags(request)
    return json_response({"tags": tags})


def _tag_name(request: Request) -> str:
    tag = request.path_params["tag"]
    if not tag or len(tag.encode()) > MAX_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid tag")
    return tag


async def put_tag(request: Request) -> Response:
    user_id, room_id, tags = await _tags(request)
    tag = _tag_name(request)
    body = await read_json(request)
    order = body.get("order")
    if order is not None and (not isinstance(order, (int, float)) or isinstance(order, bool)):
        raise MatrixError(400, "M_BAD_JSON", "'order' must be a number")
    tags[tag] = body
    await request.app.state.hs.account_data.put(user_id, "m.tag", {"tags": tags}, room_id)
    return json_response({})


async def delete_tag(request: Request) -> Response:
    user_id, room_id, tags = await _tags(request)
    tag = _tag_name(request)
    if tag in tags:
        del tags[tag]
        await request.app.state.hs.account_data.put(user_id, "m.tag", {"tags": tags}, room_id)
    return json_response({})


# --- presence ---------------------------------------------------------------------


async def get_presence(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    user_id = request.path_params["user_id"]
    if user_id != requester.user_id and not await hs.room_store.share_a_room(requester.user_id, user_id):
        if await hs.accounts.get_user(user_id) is None:
            raise not_found("Unknown user")
        raise forbidden("You do not share a room with this user")
    return json_response(await hs.presence.get(user_id))


async def put_presence(request: Request) -> Response:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "set presence")
    body = await read_json(request)
    state = body.get("presence")
    status_msg = body.get("status_msg")
    if state not in STATES:
        raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, offline or unavailable")
    if status_msg is not None and not isinstance(status_msg, str):
        raise MatrixError(400, "M_BAD_JSON", "status_msg must be a string")
    await request.app.state.hs.presence.set_state(user_id, state, status_msg)
    return json_response({})


# --- to-device --------------------------------------------------------------------


async def send_to_device(request: Request) -> Response:
    requester = await require_user(request)
    event_type = request.path_params["event_type"]
    if not event_type or len(event_type.encode()) > MAX_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid event type")
    body = await read_json(request)
    messages = body.get("messages")
    if not isinstance(messages, dict):
        raise MatrixError(400, "M_BAD_JSON", "'messages' must be an object")
    await request.app.state.hs.e2ee.send_to_device(
        requester.user_id, requester.device_id, event_type, request.path_params["txn_id"], messages
    )
    return json_response({})
