"""The one path by which this server changes a room.

`RoomEvents.send` builds an event on top of the room's current tips, checks it
against the authorization rules and the room's current state, signs it, persists it
(one transaction: event, edges, state group, extremities, current state, membership)
and then tells the notifier. Writes to one room are serialised by a per-room lock, so
the graph this server produces is linear and stream order is causal order.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from signedjson.types import SigningKey

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import (
    AuthError,
    CanonicalJsonError,
    RoomVersion,
    auth_event_types,
    build_event,
    check_auth,
    check_canonical_values,
    check_size_limits,
    get_room_version,
    named_level,
    redact_event,
    room_id_from_create_event_id,
    select_auth_event_ids,
    user_power_level_in_state,
)
from storage.events import EventStore, NewEvent, StoredEvent
from storage.state import StateKey

CREATE_KEY: StateKey = ("m.room.create", "")
# How many forward extremities one event may cite as prev_events.
MAX_PREV_EVENTS = 10

Listener = Callable[[StoredEvent], Awaitable[None]]


class RoomHead(msgspec.Struct):
    """What the next event of a room builds on: cached, updated on every persist."""

    room_version: RoomVersion
    create_event_id: str
    state_ids: dict[StateKey, str]
    state_group: int
    extremities: list[tuple[str, int]] = msgspec.field(default_factory=list)

    def next_prev_events(self) -> tuple[list[str], int]:
        """(prev_events, depth) for the next event built on this head."""
        prev = sorted(self.extremities, key=lambda e: -e[1])[:MAX_PREV_EVENTS]
        return [e[0] for e in prev], max(e[1] for e in prev) + 1


class RoomEvents:
    def __init__(self, server_name: str, signing_key: Callable[[], SigningKey], events: EventStore) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self.events = events
        self._heads: dict[str, RoomHead] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Listeners see events in stream order, across all rooms (announce waits for
        # the events before it): the federation outbox relies on it within a room
        # (a peer given event N+1 before N would have to fetch N as a gap), and the
        # sync notifier across rooms (it advances one room position to the highest
        # announced; announcing N+1 of one room while N of another waits would hand
        # out tokens past N before N is in the sync cache: N is lost).
        self.listeners: list[Listener] = []

    def lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        return lock

    async def head(self, room_id: str) -> RoomHead:
        """The room's current tips and state, or 404 M_NOT_FOUND."""
        head = self._heads.get(room_id)
        if head is not None:
            return head
        version = await self.events.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        extremities = await self.events.get_forward_extremities(room_id)
        state_ids = await self.events.get_current_state_ids(room_id)
        newest = max(extremities, key=lambda e: e[1])[0]
        group = await self.events.get_state_group_of(newest)
        assert group is not None
        head = RoomHead(get_room_version(version), state_ids[CREATE_KEY], state_ids, group, extremities)
        # Another caller may have loaded (and a writer already advanced) the head while
        # this one awaited the database: the first head stored wins, so a stale load
        # never replaces it.
        return self._heads.setdefault(room_id, head)

    async def replaced_state_notes(self, state_before: dict[StateKey, str], key: StateKey) -> dict[str, Any]:
        """`unsigned` notes for a state event replacing state_before[key].

        Clients read prev_content from unsigned, and history visibility reads the
        state before an event from it; keeping them on the stored event saves a state
        lookup on every read. Federation strips `unsigned` before sending.
        """
        replaced = state_before.get(key)
        previous = await self.events.get_event(replaced) if replaced else None
        if previous is None:
            return {}
        return {"replaces_state": replaced, "prev_content": previous.content, "prev_sender": previous.sender}

    def forget_head(self, room_id: str) -> None:
        """Drop the cached head after the room changed outside `send` (a remote join)."""
        self._heads.pop(room_id, None)

    async def state_event(self, room_id: str, event_type: str, state_key: str = "") -> StoredEvent | None:
        head = await self.head(room_id)
        event_id = head.state_ids.get((event_type, state_key))
        return await self.events.get_event(event_id) if event_id else None

    async def auth_state(self, head: RoomHead, keys: list[StateKey]) -> dict[StateKey, dict[str, Any]]:
        wanted = {key: head.state_ids[key] for key in {CREATE_KEY, *keys} if key in head.state_ids}
        found = await self.events.get_events(wanted.values())
        return {key: self.effective_pdu(head.room_version, found[event_id]) for key, event_id in wanted.items() if event_id in found}

    @staticmethod
    def effective_pdu(room_version: RoomVersion, event: StoredEvent) -> dict[str, Any]:
        """The event as the auth rules see it: redacted once a redaction applied."""
        return redact_event(room_version, event.pdu) if event.redacted_by else event.pdu

    async def create_room(self, sender: str, room_version: RoomVersion, content: dict[str, Any], now_ms: int) -> tuple[str, StoredEvent]:
        """Persist a new room's create event; returns (room_id, event)."""
        # In v12 the room ID is the create event's hash: two identical createRoom
        # requests in the same millisecond would name the same room, so a taken ID is
        # retried one millisecond later.
        for attempt in range(100):
            room_id: str | None = None
            if not room_version.room_id_is_create_event_id:
                room_id = f"!{secrets.token_urlsafe(18)}:{self.server_name}"
            event_id, pdu = build_event(
                room_version,
                room_id=room_id,
                sender=sender,
                event_type="m.room.create",
                state_key="",
                content=content,
                prev_event_ids=[],
                auth_event_ids=[],
                depth=1,
                origin_server_ts=now_ms + attempt,
                server_name=self.server_name,
                signing_key=self._signing_key(),
            )
            if room_id is None:
                room_id = room_id_from_create_event_id(event_id)
            try:
                check_auth(room_version, pdu, {})
            except AuthError as exc:
                raise MatrixError(400, "M_BAD_JSON", f"Invalid create event: {exc}") from None
            state = {CREATE_KEY: event_id}
            async with self.lock(room_id):
                if await self.events.get_room_version(room_id) is not None:
                    continue
                result = await self.events.persist(
                    NewEvent(
                        event_id=event_id,
                        room_id=room_id,
                        pdu=pdu,
                        state_group_before=None,
                        state_after=state,
                        new_room_version=room_version.identifier,
                    ),
                    now_ms,
                )
                self._heads[room_id] = RoomHead(room_version, event_id, dict(state), result.state_group, [(event_id, 1)])
            stored = StoredEvent(event_id, room_id, result.stream_ordering, pdu, None, None, False)
            await self.announce(stored)
            return room_id, stored
        raise MatrixError(503, "M_UNKNOWN", "Could not find a free room ID; try again")

    async def send(
        self,
        sender: str,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        txn: tuple[str, str, str] | None = None,
        check: Callable[[RoomHead, dict[str, Any]], Awaitable[None]] | None = None,
        countersign: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
    ) -> StoredEvent:
        """Build, authorise, sign, persist and announce one event.

        `check` runs under the room lock against the state the event builds on, for
        rules that are not auth rules (e.g. "only if the user is not joined yet").
        """
        if event_type == "m.room.create" and state_key == "":
            raise forbidden("A room has exactly one m.room.create event, sent when it is created")
        async with self.lock(room_id):
            if txn is not None:
                existing = await self.events.event_id_for_txn(*txn)
                if existing is not None:
                    event = await self.events.get_event(existing)
                    assert event is not None
                    return event
            head = await self.head(room_id)
            if check is not None:
                await check(head, content)
            version = head.room_version
            auth_ids = select_auth_event_ids(version, event_type, state_key, sender, content, head.state_ids)
            prev_ids, depth = head.next_prev_events()
            now_ms = int(time.time() * 1000)
            try:
                event_id, pdu = build_event(
                    version,
                    room_id=room_id,
                    sender=sender,
                    event_type=event_type,
                    state_key=state_key,
                    content=content,
                    prev_event_ids=prev_ids,
                    auth_event_ids=auth_ids,
                    depth=depth,
                    origin_server_ts=now_ms,
                    server_name=self.server_name,
                    signing_key=self._signing_key(),
                    redacts=redacts,
                )
                # Integers outside [-(2**53)+1, 2**53-1] are not canonical JSON either;
                # other servers would reject the event.
                check_canonical_values(pdu)
            except (CanonicalJsonError, ValueError, TypeError) as exc:
                # Floats, out-of-range integers, lone surrogates: not canonical JSON.
                raise MatrixError(400, "M_BAD_JSON", f"Event content is not valid canonical JSON: {exc}") from None
            try:
                check_size_limits(pdu, event_id)
            except AuthError as exc:
                raise MatrixError(413, "M_TOO_LARGE", str(exc)) from None
            auth_state = await self.auth_state(head, auth_event_types(version, event_type, state_key, sender, content))
            try:
                check_auth(version, pdu, auth_state, enforce_size_limits=False, create_event_id=head.create_event_id)
            except AuthError as exc:
                raise forbidden(str(exc)) from None

            applied_redaction = await self._redaction_target(head, room_id, pdu, redacts)
            if countersign is not None:
                # An invite to another server's user carries that server's signature too.
                pdu = await countersign(event_id, pdu)
            state_after = head.state_ids
            if state_key is not None:
                notes = await self.replaced_state_notes(head.state_ids, (event_type, state_key))
                if notes:
                    pdu["unsigned"] = notes
                state_after = {**head.state_ids, (event_type, state_key): event_id}
            result = await self.events.persist(
                NewEvent(
                    event_id=event_id,
                    room_id=room_id,
                    pdu=pdu,
                    state_group_before=head.state_group,
                    state_after=state_after,
                    txn=txn,
                    relation=_relation(content),
                    redacts=applied_redaction,
                ),
                now_ms,
            )
            head.state_ids = dict(state_after)
            head.state_group = result.state_group
            head.extremities = [(event_id, pdu["depth"])]
        stored = StoredEvent(event_id, room_id, result.stream_ordering, pdu, None, None, False)
        await self.announce(stored)
        return stored

    async def announce(self, event: StoredEvent) -> None:
        """Run the listeners for `event`, just stored by `EventStore.persist` (or one
        of the outlier inserts), once every event stored before it has had them or
        been released; its position is finished after."""
        positions = self.events.positions
        try:
            await positions.wait_for_earlier(event.stream_ordering)
            for listener in self.listeners:
                await listener(event)
        finally:
            positions.finish(event.stream_ordering)

    async def _redaction_target(
        self, head: RoomHead, room_id: str, pdu: dict[str, Any], redacts: str | None
    ) -> str | None:
        if pdu["type"] != "m.room.redaction" or redacts is None:
            return None
        target = await self.events.get_event(redacts)
        if target is None or target.room_id != room_id or target.rejected_reason or target.outlier:
            raise not_found("Unknown event to redact")
        if target.sender != pdu["sender"]:
            # For local users the server applies the client rule (spec: "Redactions"):
            # your own events, or anyone's with the redact power level. (The
            # federation rule, "same server as the redacted event", would let every
            # local user redact every other local user.)
            auth_state = await self.auth_state(head, [("m.room.power_levels", ""), ("m.room.member", pdu["sender"])])
            needed = named_level(auth_state.get(("m.room.power_levels", "")), "redact")
            if user_power_level_in_state(head.room_version, pdu["sender"], auth_state) < needed:
                raise forbidden("You may not redact other users' events without the redact power level")
        return redacts

    def release(self, event_position: int) -> None:
        """Give up announcing an event the caller has stored (it failed after
        persisting): the events after it go out without it."""
        self.events.positions.finish(event_position)


def _relation(content: dict[str, Any]) -> tuple[str, str] | None:
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None
    parent, rel_type = relates.get("event_id"), relates.get("rel_type")
    if isinstance(parent, str) and isinstance(rel_type, str):
        return parent, rel_type
    return None
