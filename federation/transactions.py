"""Incoming transactions: PUT /_matrix/federation/v1/send/{txnId}
(spec: Server-Server API, "Transactions").

Each PDU gets its own result; one bad PDU never drops the others. A PDU whose
prev_events we lack triggers /get_missing_events to the origin to fill the gap: one
request returns at most 20 events (Synapse's cap), so the walk back goes on from the
oldest fetched events, up to 200 events in all (a server back from a few hours away,
to which a busy room's server sends only the newest event when it catches up). A gap
longer than that is left: the event beyond it is accepted on the state its server
gives for it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.backfill import RemoteEventFetcher, depth_of
from federation.client import FederationError
from federation.inbound_auth import authenticate
from federation.pdu_checks import BadPdu, checked_pdu
from homeserver.errors import MatrixError
from homeserver.events import (
    AuthError,
    RoomVersion,
    check_auth,
    check_auth_events,
    compute_event_id,
    validate_pdu_format,
)
from homeserver.http import json_response
from homeserver.rooms.events import RoomHead
from homeserver.rooms.received import RejectedEvent

logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
MISSING_EVENTS_LIMIT = 20
MISSING_EVENTS_ROUNDS = 10
# Transactions are idempotent: a retried txnId gets the first answer.
_SEEN_LIMIT = 10_000


class TransactionHandler:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self._answers: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    async def handle(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]:
        key = (origin, txn_id)
        if key in self._answers:
            return self._answers[key]
        if not isinstance(body, dict):
            raise MatrixError(400, "M_NOT_JSON", "Transaction must be a JSON object")
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError(400, "M_BAD_JSON", "pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(400, "M_BAD_JSON", f"At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")
        results: dict[str, dict[str, Any]] = {}
        for pdu in pdus:
            event_id, error = await self._process(origin, pdu)
            if event_id is not None:
                results[event_id] = {"error": error} if error else {}
        for edu in edus:
            await self._edu(origin, edu)
        answer = {"pdus": results}
        self._answers[key] = answer
        if len(self._answers) > _SEEN_LIMIT:
            self._answers.popitem(last=False)
        return answer

    async def _process(self, origin: str, pdu: Any, depth: int = 0) -> tuple[str | None, str | None]:
        hs = self.hs
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        if not isinstance(room_id, str):
            return None, None
        try:
            head = await hs.room_events.head(room_id)
        except MatrixError:
            return None, None  # a room we are not in: nothing to answer for
        try:
            event_id, checked = await checked_pdu(hs.federation.keys, head.room_version, pdu)
        except BadPdu as exc:
            logger.info("Dropped a PDU from %s: %s", origin, exc.reason)
            return None, None
        if checked.get("room_id") != room_id:
            return event_id, "room_id changed"
        missing = [p for p in checked.get("prev_events", []) if await hs.events.get_event(p) is None]
        fetched_state = None
        if missing and depth == 0:
            await self._fill_gap(origin, room_id, event_id, checked)
            if any([await hs.events.get_event(p) is None for p in missing]):
                fetched_state = await self._state_from(origin, room_id, event_id, head)
        try:
            await hs.received_events.accept(room_id, event_id, checked, fetched_state)
        except RejectedEvent as exc:
            logger.info("Rejected %s from %s: %s", event_id, origin, exc.reason)
            return event_id, exc.reason
        return event_id, None

    async def _fill_gap(self, origin: str, room_id: str, event_id: str, pdu: dict[str, Any]) -> None:
        hs = self.hs
        head = await hs.room_events.head(room_id)
        held = [e[0] for e in head.extremities]
        fetched: dict[str, dict[str, Any]] = {}
        latest = [event_id]
        for _ in range(MISSING_EVENTS_ROUNDS):
            batch = await self._missing_events(origin, room_id, head.room_version, [*held, *fetched], latest)
            new = {i: e for i, e in batch.items() if i not in fetched and i != event_id}
            if not new:
                break
            fetched.update(new)
            # The walk goes on from the fetched events whose prev_events are neither
            # fetched nor held.
            latest = []
            for new_id, new_pdu in new.items():
                for prev in new_pdu.get("prev_events", []):
                    if isinstance(prev, str) and prev not in fetched and await hs.events.get_event(prev) is None:
                        latest.append(new_id)
                        break
            if not latest:
                break
        for missing in sorted(fetched.values(), key=depth_of):
            await self._process(origin, missing, depth=1)

    async def _missing_events(
        self, origin: str, room_id: str, version: RoomVersion, earliest: list[str], latest: list[str]
    ) -> dict[str, dict[str, Any]]:
        """One /get_missing_events request: the well-formed events of the answer by ID
        (each is checked in full when processed)."""
        try:
            body = await self.hs.federation.client.request(
                "POST",
                origin,
                f"/_matrix/federation/v1/get_missing_events/{room_id}",
                content={"earliest_events": earliest, "latest_events": latest, "limit": MISSING_EVENTS_LIMIT, "min_depth": 0},
            )
        except FederationError as exc:
            logger.info("get_missing_events from %s failed: %s", origin, exc)
            return {}
        events = body.get("events", []) if isinstance(body, dict) else []
        found: dict[str, dict[str, Any]] = {}
        for event in events[: MISSING_EVENTS_LIMIT * 2] if isinstance(events, list) else []:
            if not isinstance(event, dict):
                continue
            event = {k: v for k, v in event.items() if k != "unsigned"}
            try:
                validate_pdu_format(version, event)
                found[compute_event_id(version, event)] = event
            except ValueError:  # FormatError, or content that is not canonical JSON
                continue
        return found

    async def _state_from(self, origin: str, room_id: str, event_id: str, head: Any) -> dict[Any, str] | None:
        """The state before `event_id` as `origin` holds it (/state_ids, then /event for
        what we lack, stored as outliers): for an event beyond a gap that
        get_missing_events could not fill (spec: Server-Server API, "Retrieving events
        authorized by ..."/"PDUs": the receiving server requests the state at the event)."""
        fetcher = RemoteEventFetcher(self.hs, origin, room_id, head, {})
        try:
            state = await fetcher.state_before(event_id)
        except (FederationError, BadPdu) as exc:
            logger.info("Could not fetch the state at %s from %s: %s", event_id, origin, exc)
            return None
        # Their auth events too (state resolution walks auth chains), as far as the
        # fetcher's bound allows.
        checked: set[str] = set()
        while unchecked := [i for i in fetcher.outliers if i not in checked]:
            checked.update(unchecked)
            auth_ids = {a for i in unchecked for a in fetcher.outliers[i].get("auth_events", []) if isinstance(a, str)}
            await fetcher.events(sorted(auth_ids))
        authorised = await _authorised(fetcher, head)
        if authorised:
            await self.hs.events.persist_outliers(room_id, authorised)
        held = await self.hs.events.get_events(list(state.values()))
        # Only state we could fetch and verify counts.
        return {key: some_id for key, some_id in state.items() if some_id in held}

    async def _edu(self, origin: str, edu: Any) -> None:
        # EDUs (typing, receipts, presence, device lists, to-device) are handed to
        # whichever handler registered for their type; unknown types are ignored.
        if not isinstance(edu, dict) or not isinstance(edu.get("edu_type"), str):
            return
        handler = self.hs.federation.edu_handlers.get(edu["edu_type"])
        if handler is not None:
            try:
                await handler(origin, edu.get("content"))
            except Exception:
                logger.exception("EDU %s from %s failed", edu["edu_type"], origin)


async def send_transaction(request: Request) -> Response:
    origin, body = await authenticate(request)
    handler: TransactionHandler = request.app.state.federation.transactions
    return json_response(await handler.handle(origin, request.path_params["txn_id"], body))


async def _authorised(fetcher: RemoteEventFetcher, head: RoomHead) -> dict[str, dict[str, Any]]:
    """The fetched events that pass the auth rules against their own auth events
    (spec: checks on receipt of a PDU), checked oldest first. One that fails, or
    whose auth events could not be fetched, is left out, and so is the state naming
    it: signatures only show who sent an event, not that it was allowed."""
    version = head.room_version
    create = (await fetcher.events([head.create_event_id])).get(head.create_event_id)
    failed: set[str] = set()
    kept: dict[str, dict[str, Any]] = {}
    for event_id, pdu in sorted(fetcher.outliers.items(), key=lambda kv: depth_of(kv[1])):
        try:
            if pdu.get("type") == "m.room.create":
                raise AuthError("the room has a create event already")
            auth = await fetcher.events([a for a in pdu.get("auth_events", []) if isinstance(a, str)])
            auth_state = check_auth_events(version, pdu, auth, rejected_event_ids=failed, create_event=create)
            check_auth(version, pdu, auth_state, enforce_size_limits=False, create_event_id=head.create_event_id)
        except (AuthError, KeyError, TypeError) as exc:
            logger.info("Fetched state event %s fails the auth rules: %s", event_id, exc)
            failed.add(event_id)
            continue
        kept[event_id] = pdu
    return kept
