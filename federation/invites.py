"""Invites across servers: PUT /_matrix/federation/v2/invite/{roomId}/{eventId}, both
ways (spec: Server-Server API, "Inviting to a room").

The invitee's server countersigns the invite; until its user joins, it holds the
invite as an outlier, with the stripped room state the inviting server sent.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationError
from federation.inbound_auth import authenticate
from federation.pdu_checks import BadPdu, checked_pdu
from homeserver.errors import MatrixError, forbidden
from homeserver.events import (
    UnsupportedRoomVersion,
    compute_event_id,
    domain_of,
    get_room_version,
    sign_event,
)
from homeserver.http import json_response

# The state an invitee may see before joining (spec: "stripped state").
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)


async def stripped_state(hs: Any, room_id: str, sender: str) -> list[dict[str, Any]]:
    head = await hs.room_events.head(room_id)
    keys = [(t, "") for t in STRIPPED_STATE_TYPES] + [("m.room.member", sender)]
    wanted = [head.state_ids[k] for k in keys if k in head.state_ids]
    found = await hs.events.get_events(wanted)
    return [
        {"type": e.type, "state_key": e.state_key, "content": e.content, "sender": e.sender}
        for e in found.values()
    ]


class InviteSender:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    async def countersign(self, room_id: str, event_id: str, pdu: dict[str, Any]) -> dict[str, Any]:
        """Have the invitee's server sign our invite; returns the doubly signed event."""
        hs = self.hs
        head = await hs.room_events.head(room_id)
        destination = domain_of(pdu["state_key"])
        body = {
            "room_version": head.room_version.identifier,
            "event": pdu,
            "invite_room_state": await stripped_state(hs, room_id, pdu["sender"]),
        }
        try:
            answer = await hs.federation.client.request(
                "PUT", destination, f"/_matrix/federation/v2/invite/{room_id}/{event_id}", content=body
            )
        except FederationError as exc:
            detail = exc.body.get("error") if isinstance(exc.body, dict) else None
            raise forbidden(f"{destination} refused the invite: {detail or exc}") from None
        returned = answer.get("event") if isinstance(answer, dict) else None
        try:
            returned_id, checked = await checked_pdu(hs.federation.keys, head.room_version, returned)
        except BadPdu as exc:
            raise MatrixError(502, "M_UNKNOWN", f"{destination} returned a bad invite: {exc.reason}") from None
        if returned_id != event_id or destination not in (checked.get("signatures") or {}):
            raise MatrixError(502, "M_UNKNOWN", f"{destination} did not countersign the invite")
        return checked


async def receive_invite(request: Request) -> Response:
    origin, body = await authenticate(request)
    hs = request.app.state.hs
    if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
        raise MatrixError(400, "M_BAD_JSON", "Expected room_version and event")
    try:
        version = get_room_version(str(body.get("room_version")))
    except UnsupportedRoomVersion:
        raise MatrixError(
            400, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version", room_version=body.get("room_version")
        ) from None
    room_id = request.path_params["room_id"]
    try:
        event_id, pdu = await checked_pdu(hs.federation.keys, version, body["event"])
    except BadPdu as exc:
        raise MatrixError(400, "M_BAD_JSON", exc.reason) from None
    invitee = pdu.get("state_key")
    if (
        event_id != request.path_params["event_id"]
        or pdu.get("room_id") != room_id
        or pdu.get("type") != "m.room.member"
        or (pdu.get("content") or {}).get("membership") != "invite"
        or not isinstance(invitee, str)
        or domain_of(pdu.get("sender", "")) != origin
    ):
        raise MatrixError(400, "M_BAD_JSON", "Not an invite from your server for this room")
    if domain_of(invitee) != hs.server_name:
        raise forbidden("The invitee is not a user of this server")
    user = await hs.accounts.get_user(invitee)
    if user is None or user.deactivated:
        raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
    signed = sign_event(version, pdu, hs.server_name, hs.signing_key)
    if compute_event_id(version, signed) != event_id:
        # Its content hash was wrong: we would be signing a different event.
        raise MatrixError(400, "M_BAD_JSON", "The invite's content hash does not match")
    stripped = body.get("invite_room_state")
    stored_pdu = dict(signed)
    if isinstance(stripped, list):
        # Kept beside the event (unsigned is not covered by signatures) for the
        # invitee's client, which shows the room's name before joining.
        stored_pdu["unsigned"] = {"invite_room_state": [s for s in stripped if isinstance(s, dict)]}
    existing = await hs.events.get_event(event_id)
    if existing is None:
        stored = await hs.events.store_remote_invite(room_id, event_id, stored_pdu, invitee)
        await hs.room_events.announce(stored)
    return json_response({"event": federation_pdu_of(signed)})


def federation_pdu_of(pdu: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pdu.items() if k != "unsigned"}

