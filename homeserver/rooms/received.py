"""Events that other servers built, entering a room we hold.

The checks on receipt (spec: Server-Server API, "Checks performed on receipt of a
PDU") after signatures and hashes, which the federation layer did: the event must
pass the auth rules against its own auth events, against the state before it, and
against the room's current state. It is then persisted through the same store as local
events, under the same per-room lock, and announced to the same listeners.

An event that passes the first two but not the third is soft-failed: stored in the
graph (as an outlier with its state, so no client sees it) and never a forward
extremity.

Forks: when an event does not build on all of our tips, the room's new state is the
state resolution (v2) of our current state and the state after the event.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from homeserver.events import (
    AuthError,
    auth_event_types,
    check_auth,
    check_auth_events,
    resolve_state_groups,
)
from homeserver.rooms.events import CREATE_KEY, RoomEvents, RoomHead, _relation
from storage.events import NewEvent, StoredEvent
from storage.state import StateKey

logger = logging.getLogger(__name__)


class RejectedEvent(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReceivedEvents:
    def __init__(self, room_events: RoomEvents) -> None:
        self.room_events = room_events
        self.events = room_events.events

    async def auth_chain(self, event_ids: list[str]) -> list[StoredEvent]:
        """Every auth event reachable from `event_ids`, oldest first."""
        seen: dict[str, StoredEvent] = {}
        frontier = list(event_ids)
        while frontier:
            found = await self.events.get_events(frontier)
            frontier = []
            for event in found.values():
                for auth_id in event.pdu.get("auth_events", []):
                    if auth_id not in seen:
                        frontier.append(auth_id)
                if event.event_id not in seen:
                    seen[event.event_id] = event
            frontier = [i for i in dict.fromkeys(frontier) if i not in seen]
        return sorted(seen.values(), key=lambda e: e.stream_ordering)

    async def _state_before(
        self, head: RoomHead, room_id: str, prev_ids: list[str], fetched: dict[StateKey, str] | None
    ) -> tuple[dict[StateKey, str], int | None]:
        """The state before an event with these prev_events, and its group if stored.
        `fetched` is the sending server's answer for it (/state_ids), used when some
        prev_events are beyond a gap we could not fill."""
        if [e[0] for e in head.extremities] == prev_ids:
            return dict(head.state_ids), head.state_group
        groups = await self.events.get_state_groups_of(prev_ids)
        missing = [p for p in prev_ids if p not in groups]
        if missing:
            if fetched is None:
                raise RejectedEvent(f"unknown prev_events {missing}")
            return dict(fetched), None
        distinct = sorted(set(groups.values()))
        if len(distinct) == 1:
            return await self.room_events.events.state.get_state_ids(distinct[0]), distinct[0]
        states = [await self.events.state.get_state_ids(g) for g in distinct]
        return await self._resolve(head, states), None

    async def _resolve(self, head: RoomHead, states: list[dict[StateKey, str]]) -> dict[StateKey, str]:
        ids = {i for state in states for i in state.values()}
        chain = await self.auth_chain(list(ids))
        event_map = {e.event_id: e.pdu for e in chain}
        for event_id, event in (await self.events.get_events(ids)).items():
            event_map[event_id] = event.pdu
        if head.room_version.room_id_is_create_event_id:
            create = await self.events.get_event(head.create_event_id)
            if create is not None:
                event_map[head.create_event_id] = create.pdu
        return dict(resolve_state_groups(head.room_version, states, event_map))

    async def accept(
        self, room_id: str, event_id: str, pdu: dict[str, Any], fetched_state: dict[StateKey, str] | None = None
    ) -> StoredEvent:
        """Check and persist a remote event; RejectedEvent says why not.

        `fetched_state` (the state before the event as its server gave it, every event
        in it already stored) lets an event whose prev_events we lack in: it is still
        checked against that state and against the room's current state (soft failure),
        and our current state becomes the resolution of both, so a server cannot
        install state by claiming it."""
        room_events = self.room_events
        async with room_events.lock(room_id):
            existing = await self.events.get_event(event_id)
            if existing is not None:
                return existing
            head = await room_events.head(room_id)
            version = head.room_version
            auth_found = await self.events.get_events(pdu.get("auth_events", []))
            create = await self.events.get_event(head.create_event_id)
            try:
                auth_state = check_auth_events(
                    version,
                    pdu,
                    {i: e.pdu for i, e in auth_found.items() if e.room_id == room_id},
                    create_event=create.pdu if create else None,
                )
                check_auth(version, pdu, auth_state, create_event_id=head.create_event_id)
            except AuthError as exc:
                raise RejectedEvent(f"fails auth against its auth events: {exc.args[0]}") from None

            prev_ids = list(pdu.get("prev_events", []))
            state_before, group_before = await self._state_before(head, room_id, prev_ids, fetched_state)
            await self._check_against(head, state_before, pdu, "the state before it")
            try:
                await self._check_against(head, head.state_ids, pdu, "the room's current state")
                soft_failed = False
            except RejectedEvent as exc:
                # Spec "Soft failure": allowed where it was sent but not by the room as
                # it is now (e.g. a banned user's event built on the state before the
                # ban). Kept in the graph, shown to no client, and not built upon.
                logger.info("Soft-failed %s: %s", event_id, exc.reason)
                soft_failed = True

            state_key = pdu.get("state_key")
            state_after = dict(state_before)
            if state_key is not None:
                state_after[(pdu["type"], state_key)] = event_id
            builds_on_all_tips = {e[0] for e in head.extremities} <= set(prev_ids)
            if soft_failed:
                new_head_state = head.state_ids
            elif builds_on_all_tips:
                new_head_state = state_after
            else:
                new_head_state = await self._resolve(head, [head.state_ids, state_after])

            if group_before is None:
                group_before = await self.events.store_state_snapshot(room_id, state_before)
            now_ms = int(time.time() * 1000)
            stored_pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
            if state_key is not None:
                notes = await room_events.replaced_state_notes(state_before, (pdu["type"], state_key))
                if notes:
                    stored_pdu["unsigned"] = notes
            result = await self.events.persist(
                NewEvent(
                    event_id=event_id,
                    room_id=room_id,
                    pdu=stored_pdu,
                    state_group_before=group_before,
                    state_after=state_after,
                    relation=_relation(pdu.get("content") or {}),
                    current_state=new_head_state,
                    soft_failed=soft_failed,
                ),
                now_ms,
            )
            if soft_failed:
                return StoredEvent(event_id, room_id, result.stream_ordering, stored_pdu, None, None, True)
            head.state_ids = dict(new_head_state)
            head.extremities = [e for e in head.extremities if e[0] not in prev_ids] + [(event_id, int(pdu["depth"]))]
            if builds_on_all_tips:
                head.state_group = result.state_group
            else:
                try:
                    head.state_group = await self.events.store_state_snapshot(room_id, new_head_state)
                except BaseException:
                    room_events.forget_head(room_id)  # re-read from the database next time
                    room_events.release(result.stream_ordering)
                    raise
        stored = StoredEvent(event_id, room_id, result.stream_ordering, stored_pdu, None, None, False)
        await room_events.announce(stored)
        return stored

    async def _check_against(self, head: RoomHead, state_ids: dict[StateKey, str], pdu: dict[str, Any], what: str) -> None:
        keys = auth_event_types(head.room_version, pdu["type"], pdu.get("state_key"), pdu["sender"], pdu.get("content", {}))
        wanted = {key: state_ids[key] for key in {CREATE_KEY, *keys} if key in state_ids}
        found = await self.events.get_events(wanted.values())
        state = {key: found[i].pdu for key, i in wanted.items() if i in found}
        try:
            check_auth(head.room_version, pdu, state, create_event_id=head.create_event_id)
        except AuthError as exc:
            raise RejectedEvent(f"fails auth against {what}: {exc.args[0]}") from None
