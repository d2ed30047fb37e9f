"""Other servers' users joining, leaving and knocking on rooms we hold: make_join and
send_join (v2), and the same handshake for make_leave/send_leave (v2) and
make_knock/send_knock (spec: Server-Server API, "Joining Rooms", "Leaving Rooms",
"Knocking")."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.inbound_auth import authenticate
from federation.pdu_checks import BadPdu, checked_pdu
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import AuthError, check_auth, domain_of, select_auth_event_ids
from homeserver.http import json_response
from homeserver.rooms.received import RejectedEvent
from storage.events import StoredEvent


def federation_pdu(event: StoredEvent) -> dict[str, Any]:
    """An event as it goes over federation: the signed PDU, without our own notes."""
    return {k: v for k, v in event.pdu.items() if k != "unsigned"}


async def make_membership(request: Request, membership: str) -> Response:
    """GET make_join / make_leave / make_knock: a template the user's server signs."""
    origin, _ = await authenticate(request)
    hs = request.app.state.hs
    room_id = request.path_params["room_id"]
    user_id = request.path_params["user_id"]
    if ":" not in user_id or domain_of(user_id) != origin:
        raise forbidden(f"You can only make {membership} events for your own users")
    try:
        head = await hs.room_events.head(room_id)
    except MatrixError:
        raise not_found("Unknown room") from None
    version = head.room_version
    if membership != "leave":
        # `ver` is repeated (as servers send it) or comma-separated (as the spec's
        # form style with explode: false reads).
        offered = {v for raw in request.query_params.getlist("ver") for v in raw.split(",")}
        if version.identifier not in offered:
            raise MatrixError(
                400, "M_INCOMPATIBLE_ROOM_VERSION", "Your server does not support this room's version",
                room_version=version.identifier,
            )
    content = {"membership": membership}
    prev_ids, depth = head.next_prev_events()
    template: dict[str, Any] = {
        "type": "m.room.member",
        "state_key": user_id,
        "sender": user_id,
        "room_id": room_id,
        "content": content,
        "origin_server_ts": int(time.time() * 1000),
        "depth": depth,
        "prev_events": prev_ids,
        "auth_events": select_auth_event_ids(version, "m.room.member", user_id, user_id, content, head.state_ids),
    }
    auth_state = await hs.room_events.auth_state(
        head, [("m.room.power_levels", ""), ("m.room.member", user_id), ("m.room.join_rules", "")]
    )
    try:
        check_auth(version, template, auth_state, enforce_size_limits=False, create_event_id=head.create_event_id)
    except AuthError as exc:
        raise forbidden(f"You may not {membership} in this room: {exc.args[0]}") from None
    return json_response({"room_version": version.identifier, "event": template})


async def receive_membership(request: Request, membership: str) -> tuple[Any, StoredEvent]:
    """PUT send_join / send_leave / send_knock: check the signed event and accept it into
    the room, and relay it to the room's other servers."""
    origin, body = await authenticate(request)
    hs = request.app.state.hs
    room_id = request.path_params["room_id"]
    try:
        head = await hs.room_events.head(room_id)
    except MatrixError:
        raise not_found("Unknown room") from None
    try:
        event_id, pdu = await checked_pdu(hs.federation.keys, head.room_version, body)
    except BadPdu as exc:
        raise MatrixError(400, "M_BAD_JSON", exc.reason) from None
    if event_id != request.path_params["event_id"]:
        raise MatrixError(400, "M_BAD_JSON", "Event ID does not match the event")
    sender = pdu.get("sender", "")
    if (
        pdu.get("type") != "m.room.member"
        or pdu.get("room_id") != room_id
        or pdu.get("state_key") != sender
        or (pdu.get("content") or {}).get("membership") != membership
        or domain_of(sender) != origin
    ):
        raise MatrixError(400, "M_BAD_JSON", f"Not a {membership} event of one of your users for this room")
    try:
        stored = await hs.received_events.accept(room_id, event_id, pdu)
    except RejectedEvent as exc:
        raise forbidden(exc.reason) from None
    if stored.outlier:
        raise forbidden("The event is not allowed by the room's current state")
    await hs.federation.sender.relay(stored, origin)
    return hs, stored


async def make_join(request: Request) -> Response:
    return await make_membership(request, "join")


async def send_join(request: Request) -> Response:
    hs, stored = await receive_membership(request, "join")
    room_id, pdu = stored.room_id, stored.pdu
    prev_ids = list(pdu.get("prev_events", []))
    groups = await hs.events.get_state_groups_of(prev_ids)
    state_ids: dict[Any, str] = {}
    for group in sorted(set(groups.values())):
        state_ids.update(await hs.state_store.get_state_ids(group))
    state_events = await hs.events.get_events(state_ids.values())
    chain = await hs.received_events.auth_chain([*state_ids.values(), *pdu.get("auth_events", [])])
    members = await hs.room_store.members(room_id, ("join",))
    servers = sorted({domain_of(m.user_id) for m in members})
    return json_response(
        {
            "origin": hs.server_name,
            "members_omitted": False,
            "servers_in_room": servers,
            "state": [federation_pdu(e) for e in state_events.values()],
            "auth_chain": [federation_pdu(e) for e in chain if e.event_id not in state_ids.values()],
            "event": federation_pdu(stored),
        }
    )
