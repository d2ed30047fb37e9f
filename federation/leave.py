"""Leaving rooms through another server: make_leave + send_leave (v2) both ways
(spec: Server-Server API, "Leaving Rooms (Rejecting Invites)").

A user of ours leaves through a resident server when we are not in the room: to
reject an invite from another server, or to rescind a knock. The signed leave is
kept as an outlier that their membership row points at, so /sync moves the room from
`invite` (or `knock`) to `leave`.

The joining side's handshake (a template from make_<membership>, our signature,
send_<membership>) is shared with knocks (`federation/knock.py`); the resident side of
all three memberships is in `federation/join.py`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationError
from federation.join import make_membership, receive_membership
from federation.pdu_checks import BadPdu
from homeserver.errors import MatrixError
from homeserver.events import (
    ROOM_VERSIONS,
    RoomVersion,
    UnsupportedRoomVersion,
    build_event,
    get_room_version,
)
from homeserver.http import json_response

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


async def make_leave(request: Request) -> Response:
    return await make_membership(request, "leave")


async def send_leave(request: Request) -> Response:
    await receive_membership(request, "leave")
    return json_response({})

