"""Room history for other servers: /event, /state_ids, /state, /backfill,
/get_missing_events — served only to servers with a user in the room."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.inbound_auth import authenticate
from federation.join import federation_pdu
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import domain_of
from homeserver.http import json_response, query_int

MAX_EVENTS = 100


async def _require_server_in_room(request: Request, origin: str, room_id: str) -> None:
    hs = request.app.state.hs
    try:
        await hs.room_events.head(room_id)
    except MatrixError:
        raise not_found("Unknown room") from None
    members = await hs.room_store.members(room_id, ("join", "invite", "knock"))
    if not any(domain_of(m.user_id) == origin for m in members):
        raise forbidden("Your server has no users in this room")


def _origin_body(hs: Any, pdus: list[dict[str, Any]]) -> dict[str, Any]:
    return {"origin": hs.server_name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus}


async def get_event(request: Request) -> Response:
    origin, _ = await authenticate(request)
    hs = request.app.state.hs
    event = await hs.events.get_event(request.path_params["event_id"])
    if event is None or event.rejected_reason:
        raise not_found("Unknown event")
    await _require_server_in_room(request, origin, event.room_id)
    return json_response(_origin_body(hs, [federation_pdu(event)]))


async def _state_at(request: Request, room_id: str) -> dict[Any, str]:
    hs = request.app.state.hs
    event_id = request.query_params.get("event_id")
    if event_id is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing event_id")
    event = await hs.events.get_event(event_id)
    if event is None or event.room_id != room_id:
        raise not_found("Unknown event")
    # The state *before* the event, as the spec asks: the state after its prev events.
    groups = await hs.events.get_state_groups_of(list(event.pdu.get("prev_events", [])))
    state: dict[Any, str] = {}
    for group in sorted(set(groups.values())):
        state.update(await hs.state_store.get_state_ids(group))
    return state


async def state_ids(request: Request) -> Response:
    origin, _ = await authenticate(request)
    hs = request.app.state.hs
    room_id = request.path_params["room_id"]
    await _require_server_in_room(request, origin, room_id)
    state = await _state_at(request, room_id)
    chain = await hs.received_events.auth_chain(list(state.values()))
    return json_response({"pdu_ids": list(state.values()), "auth_chain_ids": [e.event_id for e in chain]})


async def state(request: Request) -> Response:
    origin, _ = await authenticate(request)
    hs = request.app.state.hs
    room_id = request.path_params["room_id"]
    await _require_server_in_room(request, origin, room_id)
    state_map = await _state_at(request, room_id)
    events = await hs.events.get_events(state_map.values())
    chain = await hs.received_events.auth_chain(list(state_map.values()))
    return json_response(
        {"pdus": [federation_pdu(e) for e in events.values()], "auth_chain": [federation_pdu(e) for e in chain]}
    )


async def backfill(request: Request) -> Response:
    origin, _ = await authenticate(request)
    hs = request.app.state.hs
    room_id = request.path_params["room_id"]
    await _require_server_in_room(request, origin, room_id)
    limit = min(query_int(request, "limit", 10) or 10, MAX_EVENTS)
    starts = request.query_params.getlist("v")
    if not starts:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing v")
    known = await hs.events.get_events(starts)
    if not known:
        return json_response(_origin_body(hs, []))
    newest = max(e.stream_ordering for e in known.values())
    page = await hs.events.room_events(room_id, before=newest + 1, backwards=True, limit=limit)
    return json_response(_origin_body(hs, [federation_pdu(e) for e in page]))


async def get_missing_events(request: Request) -> Response:
    origin, body = await authenticate(request)
    hs = request.app.state.hs
    room_id = request.path_params["room_id"]
    await _require_server_in_room(request, origin, room_id)
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "Body must be an object")
    earliest = set(body.get("earliest_events") or [])
    latest = body.get("latest_events") or []
    limit = min(int(body.get("limit", 10)) if isinstance(body.get("limit"), int) else 10, MAX_EVENTS)
    # Walk prev_events back from latest, stopping at earliest.
    found: dict[str, Any] = {}
    frontier = [p for e in (await hs.events.get_events(latest)).values() for p in e.pdu.get("prev_events", [])]
    while frontier and len(found) < limit:
        batch = await hs.events.get_events([f for f in frontier if f not in earliest and f not in found])
        frontier = []
        for event in batch.values():
            if event.room_id != room_id or len(found) >= limit:
                continue
            found[event.event_id] = event
            frontier.extend(event.pdu.get("prev_events", []))
    events = sorted(found.values(), key=lambda e: e.stream_ordering)
    return json_response({"events": [federation_pdu(e) for e in events]})
