"""Leaving rooms through another server: make_leave + send_leave (v2) both ways
(spec: Server-Server API, "Leaving Rooms (Rejecting Invites)").

A user of ours leaves through a resident server when we are not in the room: to
reject an invite from another server, or to rescind a knock. The signed leave is
kept as an outlier that their membership row points at, so /sync moves the room from
`invite` (or `knock`) to `leave`.

The handshake of the user's server (a template from make_<membership>, our
signature, send_<membership>) is `remote_join.handshake`, shared by joins, leaves and
knocks; the resident side of all three is in `federation/join.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationError
from federation.join import make_membership, receive_membership
from federation.pdu_checks import BadPdu
from federation.remote_join import handshake
from homeserver.errors import MatrixError
from homeserver.http import json_response

logger = logging.getLogger(__name__)


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
            await hs.room_events.announce(stored)
            return
        raise MatrixError(502, "M_UNKNOWN", "Could not leave the room through any server: " + "; ".join(errors))


# --- the resident side -----------------------------------------------------------------


async def make_leave(request: Request) -> Response:
    return await make_membership(request, "leave")


async def send_leave(request: Request) -> Response:
    await receive_membership(request, "leave")
    return json_response({})

