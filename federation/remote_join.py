"""Joining a room held by other servers: make_join, then send_join (v2), then taking
in the room's state and auth chain after checking every event of them
(spec: Server-Server API, "Joining Rooms")."""

from __future__ import annotations

import logging
import time
from typing import Any

from federation.client import FederationError
from federation.pdu_checks import BadPdu, checked_pdu
from homeserver.errors import MatrixError
from homeserver.events import (
    ROOM_VERSIONS,
    AuthError,
    RoomVersion,
    UnsupportedRoomVersion,
    build_event,
    check_auth,
    check_auth_events,
    compute_event_id,
    get_room_version,
)
from storage.events import NewEvent, StoredEvent

logger = logging.getLogger(__name__)

FED = "/_matrix/federation"


async def handshake(
    hs: Any,
    server: str,
    membership: str,
    room_id: str,
    user_id: str,
    content: dict[str, Any],
    send_version: str,
    timeout: float = 60,
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
        "PUT", server, f"{FED}/{send_version}/send_{membership}/{room_id}/{event_id}", content=pdu, timeout=timeout
    )
    return version, event_id, pdu, answer


class RemoteJoiner:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    async def join(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> None:
        if not servers:
            raise MatrixError(404, "M_NOT_FOUND", "No server to join this room through (add via=)")
        errors = []
        for server in servers:
            try:
                await self._join_via(server, user_id, room_id, content)
                return
            except (FederationError, BadPdu, AuthError) as exc:
                logger.info("Joining %s via %s failed: %s", room_id, server, exc)
                errors.append(f"{server}: {getattr(exc, 'reason', exc)}")
            except MatrixError as exc:
                if exc.status in (403, 404) and len(servers) == 1:
                    raise
                errors.append(f"{server}: {exc.error}")
        raise MatrixError(502, "M_UNKNOWN", "Could not join the room: " + "; ".join(errors))

    async def _join_via(self, server: str, user_id: str, room_id: str, content: dict[str, Any]) -> None:
        hs = self.hs
        # A join's answer carries the room's whole state: a longer wait than the others.
        version, event_id, pdu, response = await handshake(
            hs, server, "join", room_id, user_id, content, "v2", timeout=120
        )
        if not isinstance(response, dict):
            raise BadPdu("send_join returned no object")
        # A restricted join comes back countersigned by the resident server.
        returned = response.get("event")
        if isinstance(returned, dict) and compute_event_id(version, returned) == event_id:
            pdu = {k: v for k, v in returned.items() if k != "unsigned"}

        checked: dict[str, dict[str, Any]] = {}
        for raw in [*response.get("auth_chain", []), *response.get("state", [])]:
            some_id, some_pdu = await checked_pdu(hs.federation.keys, version, raw)
            if some_pdu.get("room_id", room_id) != room_id and some_pdu.get("type") != "m.room.create":
                raise BadPdu("send_join returned an event of another room")
            checked[some_id] = some_pdu
        create_ids = [i for i, p in checked.items() if p.get("type") == "m.room.create" and p.get("state_key") == ""]
        if len(create_ids) != 1:
            raise BadPdu("send_join returned no single create event")
        create_id = create_ids[0]
        # Every event of the state and auth chain must pass the auth rules against its
        # own auth events; check them oldest first.
        for some_id, some_pdu in sorted(checked.items(), key=lambda kv: kv[1].get("depth", 0)):
            if some_id == create_id:
                check_auth(version, some_pdu, {})
                continue
            auth_state = check_auth_events(version, some_pdu, checked, create_event=checked[create_id])
            check_auth(version, some_pdu, auth_state, enforce_size_limits=False, create_event_id=create_id)

        state_ids: dict[tuple[str, str], str] = {}
        for raw in response.get("state", []):
            if isinstance(raw, dict) and isinstance(raw.get("state_key"), str):
                some_id = compute_event_id(version, {k: v for k, v in raw.items() if k != "unsigned"})
                state_ids[(raw["type"], raw["state_key"])] = some_id
        if ("m.room.create", "") not in state_ids:
            state_ids[("m.room.create", "")] = create_id
        join_auth = check_auth_events(version, pdu, checked, create_event=checked[create_id])
        check_auth(version, pdu, join_auth, create_event_id=create_id)

        await self._store(room_id, version.identifier, event_id, pdu, checked, state_ids)

    async def _store(
        self,
        room_id: str,
        version: str,
        event_id: str,
        pdu: dict[str, Any],
        checked: dict[str, dict[str, Any]],
        state_ids: dict[tuple[str, str], str],
    ) -> None:
        hs = self.hs
        room_events = hs.room_events
        async with room_events.lock(room_id):
            await hs.events.persist_outliers(room_id, checked)
            group = await hs.events.store_state_snapshot(room_id, state_ids)
            state_after = {**state_ids, ("m.room.member", pdu["state_key"]): event_id}
            notes = await room_events.replaced_state_notes(state_ids, ("m.room.member", pdu["state_key"]))
            if notes:
                pdu = {**pdu, "unsigned": notes}
            result = await hs.events.persist(
                NewEvent(
                    event_id=event_id,
                    room_id=room_id,
                    pdu=pdu,
                    state_group_before=group,
                    state_after=state_after,
                    new_room_version=version,
                    current_state=state_after,
                ),
                int(time.time() * 1000),
            )
            room_events.forget_head(room_id)
        await room_events.announce(StoredEvent(event_id, room_id, result.stream_ordering, pdu, None, None, False))
