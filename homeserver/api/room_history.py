"""Room history: /messages, /context, /relations, /threads
(spec: Client-Server API, "Getting events for a room", "Relationships", "Threading")."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.api.rooms import reader_of, room_id_param
from homeserver.auth import require_user
from homeserver.errors import MatrixError
from homeserver.http import json_response, query_int

MAX_LIMIT = 1000


def _direction(request: Request, required: bool) -> bool:
    """True for backwards."""
    value = request.query_params.get("dir")
    if value is None:
        if required:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing dir")
        return True
    if value not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    return value == "b"


def _limit(request: Request, default: int) -> int:
    limit = query_int(request, "limit", default)
    assert limit is not None
    if limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    return min(limit, MAX_LIMIT)


def room_event_filter(raw: str | None) -> dict[str, Any]:
    """A RoomEventFilter from the `filter` query parameter (inline JSON)."""
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "filter must be a JSON object")
    for key in ("types", "not_types", "senders", "not_senders"):
        items = value.get(key)
        if items is not None and (not isinstance(items, list) or not all(isinstance(i, str) for i in items)):
            raise MatrixError(400, "M_BAD_JSON", f"filter.{key} must be a list of strings")
        if items and any("\x00" in i for i in items):
            raise MatrixError(400, "M_INVALID_PARAM", f"filter.{key} must not contain NUL characters")
    for key in ("contains_url", "lazy_load_members", "include_redundant_members", "unread_thread_notifications"):
        if key in value and not isinstance(value[key], bool):
            raise MatrixError(400, "M_BAD_JSON", f"filter.{key} must be a boolean")
    if "limit" in value and (not isinstance(value["limit"], int) or isinstance(value["limit"], bool)):
        raise MatrixError(400, "M_BAD_JSON", "filter.limit must be an integer")
    return value


async def messages(request: Request) -> Response:
    requester = await require_user(request)
    event_filter = room_event_filter(request.query_params.get("filter"))
    limit = _limit(request, 10)
    if isinstance(event_filter.get("limit"), int):
        limit = min(limit, max(0, event_filter["limit"]))
    response = await request.app.state.hs.room_reader.messages(
        reader_of(requester),
        room_id_param(request),
        from_token=request.query_params.get("from"),
        to_token=request.query_params.get("to"),
        backwards=_direction(request, required=True),
        limit=limit,
        event_filter=event_filter,
    )
    return json_response(response)


async def context(request: Request) -> Response:
    requester = await require_user(request)
    event_filter = room_event_filter(request.query_params.get("filter"))
    response = await request.app.state.hs.room_reader.context(
        reader_of(requester),
        room_id_param(request),
        request.path_params["event_id"],
        _limit(request, 10),
        event_filter=event_filter,
    )
    return json_response(response)


async def relations(request: Request) -> Response:
    requester = await require_user(request)
    response = await request.app.state.hs.room_reader.relations(
        reader_of(requester),
        room_id_param(request),
        request.path_params["event_id"],
        rel_type=request.path_params.get("rel_type"),
        event_type=request.path_params.get("event_type"),
        from_token=request.query_params.get("from"),
        to_token=request.query_params.get("to"),
        backwards=_direction(request, required=False),
        limit=_limit(request, 50),
    )
    return json_response(response)


async def threads(request: Request) -> Response:
    requester = await require_user(request)
    include = request.query_params.get("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
    response = await request.app.state.hs.room_reader.threads(
        reader_of(requester),
        room_id_param(request),
        participated_only=include == "participated",
        from_token=request.query_params.get("from"),
        limit=_limit(request, 50),
    )
    return json_response(response)
