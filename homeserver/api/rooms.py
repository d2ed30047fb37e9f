"""Room creation, sending events and state, redactions, reading events and members
(spec: Client-Server API, "Rooms" and "Events")."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import Requester, require_user
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import MAX_PDU_SIZE, CanonicalJsonError, encode_canonical_json
from homeserver.events.canonical import normalise_numbers
from homeserver.http import Body, json_response, read_json, read_model
from homeserver.rooms.create import CreateRoomRequest
from homeserver.rooms.reading import REDACT_TXN_PREFIX, Reader

MAX_ID_BYTES = 255
MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


class CreateRoomBody(Body):
    visibility: str = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: list[str] = []
    invite_3pid: list[dict[str, Any]] = []
    room_version: str | None = None
    creation_content: dict[str, Any] = {}
    initial_state: list[dict[str, Any]] = []
    preset: str | None = None
    is_direct: bool = False
    power_level_content_override: dict[str, Any] | None = None


class RedactBody(Body):
    reason: str | None = None


class ReportBody(Body):
    reason: str | None = None
    score: int | None = None


def reader_of(requester: Requester) -> Reader:
    return Reader(requester.user_id, requester.device_id)


def room_id_param(request: Request) -> str:
    room_id = request.path_params["room_id"]
    if not room_id.startswith("!") or len(room_id.encode()) > MAX_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    return room_id


def checked_name(value: str, what: str) -> str:
    if len(value.encode()) > MAX_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", f"{what} is longer than {MAX_ID_BYTES} bytes")
    return value


_LEVEL_KEYS = ("ban", "kick", "redact", "invite", "users_default", "events_default", "state_default")
# What an event adds around its content (IDs, hashes, signature, ...), well over the
# real figure: initial events near the size limit are refused before the room exists.
_EVENT_OVERHEAD = 1024


def _canonical(value: Any, what: str) -> Any:
    try:
        return normalise_numbers(value)
    except (CanonicalJsonError, ValueError, TypeError) as exc:
        raise MatrixError(400, "M_BAD_JSON", f"{what} is not valid canonical JSON: {exc}") from None


def _validate_create_contents(body: CreateRoomBody) -> None:
    """Everything createRoom will send, checked before the room exists, so that a
    rejected request creates nothing (no half-built rooms)."""
    _canonical(body.creation_content, "creation_content")
    for state in body.initial_state:
        checked_name(state["type"], "initial_state type")
        checked_name(state.get("state_key", ""), "initial_state state_key")
        content = _canonical(state.get("content", {}), "initial_state content")
        size = len(encode_canonical_json({"type": state["type"], "state_key": state.get("state_key", ""), "content": content}))
        if size + _EVENT_OVERHEAD > MAX_PDU_SIZE:
            raise MatrixError(413, "M_TOO_LARGE", "An initial_state event would exceed the event size limit")
    override = body.power_level_content_override
    if override is None:
        return
    _canonical(override, "power_level_content_override")

    def is_level(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for key in _LEVEL_KEYS:
        if key in override and not is_level(override[key]):
            raise MatrixError(400, "M_BAD_JSON", f"power_level_content_override.{key} must be an integer")
    for key in ("users", "events", "notifications"):
        if key not in override:
            continue
        levels = override[key]
        if not isinstance(levels, dict) or not all(is_level(v) for v in levels.values()):
            raise MatrixError(400, "M_BAD_JSON", f"power_level_content_override.{key} must map to integers")


async def create_room(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, CreateRoomBody)
    hs = request.app.state.hs
    if body.visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
    for state in body.initial_state:
        if not isinstance(state.get("type"), str) or not isinstance(state.get("content", {}), dict):
            raise MatrixError(400, "M_BAD_JSON", "initial_state entries need a string type and an object content")
        if not isinstance(state.get("state_key", ""), str):
            raise MatrixError(400, "M_BAD_JSON", "initial_state state_key must be a string")
    if body.room_alias_name is not None and (":" in body.room_alias_name or not body.room_alias_name):
        raise MatrixError(400, "M_INVALID_PARAM", "room_alias_name must be the local part of an alias")
    _validate_create_contents(body)

    async def publish(room_id: str) -> None:
        await hs.room_store.set_public(room_id, True)

    room_id, alias = await hs.room_creator.create(
        requester.user_id,
        CreateRoomRequest(
            preset=body.preset,
            visibility=body.visibility,
            room_alias_name=body.room_alias_name,
            name=body.name,
            topic=body.topic,
            invite=body.invite,
            is_direct=body.is_direct,
            initial_state=body.initial_state,
            creation_content=body.creation_content,
            power_level_content_override=body.power_level_content_override,
            room_version=body.room_version,
        ),
        publish,
    )
    response: dict[str, Any] = {"room_id": room_id}
    if alias:
        response["room_alias"] = alias
    return json_response(response)


async def send_message(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    hs.ratelimiter.check("message", requester.user_id, hs.config.rate_limits.message)
    room_id = room_id_param(request)
    event_type = checked_name(request.path_params["event_type"], "Event type")
    content = await read_json(request)
    txn = (requester.user_id, requester.device_id, request.path_params["txn_id"])
    redacts = content.get("redacts") if event_type == "m.room.redaction" else None
    if event_type == "m.room.redaction" and not isinstance(redacts, str):
        raise MatrixError(400, "M_BAD_JSON", "A redaction needs the event ID it redacts in content.redacts")
    event = await hs.room_events.send(requester.user_id, room_id, event_type, content, txn=txn, redacts=redacts)
    return json_response({"event_id": event.event_id})


async def _check_canonical_alias(request: Request, room_id: str, content: dict[str, Any]) -> None:
    directory = request.app.state.hs.directory
    aliases = [content.get("alias")] if content.get("alias") is not None else []
    alt = content.get("alt_aliases", [])
    if not isinstance(alt, list):
        raise MatrixError(400, "M_INVALID_PARAM", "alt_aliases must be a list")
    for alias in [*aliases, *alt]:
        if not isinstance(alias, str):
            raise MatrixError(400, "M_INVALID_PARAM", "Aliases must be strings")
        try:
            target = await directory.resolve(alias)
        except MatrixError:
            target = None
        if target != room_id:
            raise MatrixError(400, "M_BAD_ALIAS", f"{alias} does not point to this room")


async def put_state(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    room_id = room_id_param(request)
    event_type = checked_name(request.path_params["event_type"], "Event type")
    state_key = checked_name(request.path_params.get("state_key", ""), "State key")
    content = await read_json(request)
    if event_type == "m.room.canonical_alias":
        await _check_canonical_alias(request, room_id, content)
    event = await hs.room_events.send(requester.user_id, room_id, event_type, content, state_key=state_key)
    return json_response({"event_id": event.event_id})


async def get_state_event(request: Request) -> Response:
    requester = await require_user(request)
    reader = request.app.state.hs.room_reader
    room_id = room_id_param(request)
    event = await reader.state_event(
        reader_of(requester), room_id, request.path_params["event_type"], request.path_params.get("state_key", "")
    )
    if request.query_params.get("format") == "event":
        return json_response((await reader.serialize(reader_of(requester), [event]))[0])
    if event.redacted_by:
        # The content of a redacted state event is what redaction left of it.
        return json_response((await reader.serialize(reader_of(requester), [event]))[0]["content"])
    return json_response(event.content)


async def get_state(request: Request) -> Response:
    requester = await require_user(request)
    return json_response(await request.app.state.hs.room_reader.state(reader_of(requester), room_id_param(request)))


async def redact(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    room_id = room_id_param(request)
    body = await read_model(request, RedactBody, allow_empty=True)
    target = request.path_params["event_id"]
    content: dict[str, Any] = {}
    if body.reason is not None:
        content["reason"] = body.reason
    event = await hs.room_events.send(
        requester.user_id,
        room_id,
        "m.room.redaction",
        content,
        redacts=target,
        txn=(requester.user_id, requester.device_id, REDACT_TXN_PREFIX + request.path_params["txn_id"]),
    )
    return json_response({"event_id": event.event_id})


async def get_event(request: Request) -> Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    return json_response(
        await request.app.state.hs.room_reader.event(reader_of(requester), room_id, request.path_params["event_id"])
    )


async def joined_rooms(request: Request) -> Response:
    requester = await require_user(request)
    memberships = await request.app.state.hs.room_store.rooms_for_user(requester.user_id)
    return json_response({"joined_rooms": [m.room_id for m in memberships]})


async def members(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    room_id = room_id_param(request)
    reader = hs.room_reader
    at = request.query_params.get("at")
    state_ids = await reader.member_state_ids(requester.user_id, room_id, at)
    member_ids = [event_id for (kind, _), event_id in state_ids.items() if kind == "m.room.member"]
    events = (await hs.events.get_events(member_ids)).values()
    wanted = request.query_params.get("membership")
    unwanted = request.query_params.get("not_membership")
    for value in (wanted, unwanted):
        if value is not None and value not in MEMBERSHIPS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown membership {value!r}")
    chosen = [
        e
        for e in events
        if (wanted is None or e.content.get("membership") == wanted)
        and (unwanted is None or e.content.get("membership") != unwanted)
    ]
    chosen.sort(key=lambda e: e.state_key or "")
    return json_response({"chunk": await reader.serialize(reader_of(requester), chosen)})


async def joined_members(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    room_id = room_id_param(request)
    membership = await hs.room_reader.require_member_or_readable(requester.user_id, room_id)
    if membership != "join" and not requester.is_admin:
        raise forbidden("You are not in this room")
    state_ids = (await hs.room_events.head(room_id)).state_ids
    member_ids = [event_id for (kind, _), event_id in state_ids.items() if kind == "m.room.member"]
    joined: dict[str, Any] = {}
    for event in (await hs.events.get_events(member_ids)).values():
        if event.content.get("membership") == "join" and event.state_key:
            joined[event.state_key] = {
                "display_name": event.content.get("displayname"),
                "avatar_url": event.content.get("avatar_url"),
            }
    return json_response({"joined": joined})


async def report_event(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    room_id = room_id_param(request)
    body = await read_model(request, ReportBody, allow_empty=True)
    if body.reason is not None and "\x00" in body.reason:
        raise MatrixError(400, "M_INVALID_PARAM", "reason must not contain NUL characters")
    event_id = request.path_params["event_id"]
    try:
        await hs.room_reader.event(reader_of(requester), room_id, event_id)
    except MatrixError:
        # Unknown and invisible events look the same, so reports leak nothing.
        raise not_found("Event not found") from None
    await hs.reports.add(room_id, event_id, requester.user_id, body.reason, body.score, int(time.time() * 1000))
    return json_response({})
