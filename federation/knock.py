"""Knocking across servers: make_knock + send_knock (v1) both ways
(spec: Server-Server API, "Knocking upon a room"; room versions 7 and later, so
every version we support).

A user of ours knocking on a room we are not in goes through a resident server; its
answer's `knock_room_state` (stripped state naming the room) is kept in the knock
event's `unsigned` beside the outlier, and /sync shows it in the `knock` section. A
remote user knocking on our room gets the same stripped state as an invitee.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationError
from federation.invites import stripped_state
from federation.join import make_membership, receive_membership
from federation.pdu_checks import BadPdu
from federation.remote_join import handshake
from homeserver.errors import MatrixError
from homeserver.http import json_response

logger = logging.getLogger(__name__)


class RemoteKnocker:
    """Membership.remote_knock: knock on a room we are not in through a resident server."""

    def __init__(self, hs: Any) -> None:
        self.hs = hs

    async def knock(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> None:
        hs = self.hs
        if not servers:
            raise MatrixError(404, "M_NOT_FOUND", "No server to knock through (add via=)")
        errors = []
        for server in dict.fromkeys(servers):
            try:
                _, event_id, pdu, answer = await handshake(hs, server, "knock", room_id, user_id, content, "v1")
            except (FederationError, BadPdu, ValueError) as exc:
                # ValueError: a template we cannot build a valid event from.
                logger.info("Knocking on %s via %s failed: %s", room_id, server, exc)
                errors.append(f"{server}: {getattr(exc, 'reason', exc)}")
                continue
            except MatrixError as exc:
                if exc.status in (400, 403) and len(servers) == 1:
                    raise
                errors.append(f"{server}: {exc.error}")
                continue
            room_state = answer.get("knock_room_state") if isinstance(answer, dict) else None
            stored_pdu = dict(pdu)
            if isinstance(room_state, list):
                # Beside the event, as for remote invites (unsigned is outside the
                # signatures): the client shows the room's name before it is let in.
                stored_pdu["unsigned"] = {
                    "knock_room_state": [s for s in room_state if _is_stripped_event(s)]
                }
            stored = await hs.events.store_outlier_membership(room_id, event_id, stored_pdu)
            await hs.room_events.announce(stored)
            return
        raise MatrixError(502, "M_UNKNOWN", "Could not knock on the room: " + "; ".join(errors))


def _is_stripped_event(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("type"), str)
        and isinstance(value.get("state_key"), str)
        and isinstance(value.get("sender"), str)
        and isinstance(value.get("content"), dict)
    )


async def make_knock(request: Request) -> Response:
    return await make_membership(request, "knock")


async def send_knock(request: Request) -> Response:
    hs, stored = await receive_membership(request, "knock")
    return json_response({"knock_room_state": await stripped_state(hs, stored.room_id, stored.sender)})
