"""Leaving rooms through another server: make_leave + send_leave (v2) both ways
(spec: Server-Server API, "Leaving Rooms (Rejecting Invites)").

A user of ours leaves through a resident server when we are not in the room: to
reject an invite from another server, or to rescind a knock. The signed leave is
kept as an outlier that their membership row points at, so /sync moves the room from
`invite` (or `knock`) to `leave`.

The handshake (a template from make_<membership>, our signature, send_<membership>)
and its resident side are shared with knocks (`federation/knock.py`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationError
from federation.inbound_auth import authenticate
from federation.pdu_checks import BadPdu, checked_pdu
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import (
    ROOM_VERSIONS,
    AuthError,
    RoomVersion,
    UnsupportedRoomVersion,
    build_event,
    check_auth,
    domain_of,
    get_room_version,
    select_auth_event_ids,
)
from homeserver.http import json_response
from homeserver.rooms.received import RejectedEvent
from storage.events import StoredEvent

logger = logging.getLogger(__name__)

FED = "/_matrix/federation"


# --- the side of the user's server -----------------------------------------------------


async def handshake(
    hs: Any, server: str, membership: str, room_id: str, user_id: str, content: dict[str, Any], send_version: str
) -> tuple[RoomVersion, str, dict[str, Any], Any]:
    """make_<membership> on `server`, sign the event, send_<membership>:
    (room version, event ID, the signed PDU, send_<membership>'s answer)."""
    client = hs.federation.client
    try:
        made = await client.request(
            "GET",
            server,
            f"{FED}/v1/make_{membership}/{room_id}/{user_id}",
            query={"ver": sorted(ROOM_VERSIONS)},
        )
    except FederationError as exc:
        if exc.status in (400, 403, 404):
            body = exc.body if isinstance(exc.body, dict) else {}
            raise MatrixError(
                exc.status, str(body.get("errcode", "M_FORBIDDEN")), str(body.get("error", f"{membership} refused"))
            ) from None
        raise
    if not isinstance(made, dict):
        raise BadPdu(f"make_{membership} returned no object")
    try:
        version = get_room_version(str(made.get("room_version")))
    except UnsupportedRoomVersion:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", "The room's version is not supported") from None
    template = made.get("event")
    if not isinstance(template, dict):
        raise BadPdu(f"make_{membership} returned no event")
    prev = template.get("prev_events")
    auth = template.get("auth_events")
    depth = template.get("depth")
    if not isinstance(prev, list) or not isinstance(auth, list) or not isinstance(depth, int):
        raise BadPdu(f"make_{membership} returned a bad template")
    event_id, pdu = build_event(
        version,
        room_id=room_id,
        sender=user_id,
        event_type="m.room.member",
        state_key=user_id,
        content=content,
        prev_event_ids=[p for p in prev if isinstance(p, str)],
        auth_event_ids=[a for a in auth if isinstance(a, str)],
        depth=depth,
        origin_server_ts=int(time.time() * 1000),
        server_name=hs.server_name,
        signing_key=hs.signing_key,
    )
    answer = await client.request(
        "PUT", server, f"{FED}/{send_version}/send_{membership}/{room_id}/{event_id}", content=pdu, timeout=60
    )
    return version, event_id, pdu, answer


class RemoteLeaver:
    """Membership.remote_leave: leave a room we are not in through a resident server."""

    def __init__(self, hs: Any) -> None:
        self.hs = hs

    async def leave(self, user_id: str, room_id: str, servers: list[str], reason: str | None) -> None:
        hs = self.hs
        content: dict[str, Any] = {"membership": "leave"}
        if reason:
            content["reason"] = reason
        errors = []
        for server in dict.fromkeys(servers):
            if server == hs.server_name:
                continue
            try:
                _, event_id, pdu, _ = await handshake(hs, server, "leave", room_id, user_id, content, "v2")
            except (FederationError, BadPdu, ValueError) as exc:
                # ValueError: a template we cannot build a valid event from.
                logger.info("Leaving %s via %s failed: %s", room_id, server, exc)
                errors.append(f"{server}: {getattr(exc, 'reason', exc)}")
                continue
            except MatrixError as exc:
                errors.append(f"{server}: {exc.error}")
                continue
            stored = await hs.events.store_outlier_membership(room_id, event_id, pdu)
            await hs.room_events.notify(stored)
            return
        raise MatrixError(502, "M_UNKNOWN", "Could not leave the room through any server: " + "; ".join(errors))


# --- the resident side -----------------------------------------------------------------


async def make_membership(request: Request, membership: str) -> Response:
    """GET make_leave / make_knock: a template the user's server signs."""
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
    if membership == "knock":
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
        "origin": hs.server_name,
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
    """PUT send_leave / send_knock: check the signed event and accept it into the room."""
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


async def make_leave(request: Request) -> Response:
    return await make_membership(request, "leave")


async def send_leave(request: Request) -> Response:
    await receive_membership(request, "leave")
    return json_response({})

