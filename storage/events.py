"""Room events: persisting one event with everything that follows from it, in one
transaction, and reading events back.

What one persisted event writes: the event row (which assigns its stream_ordering),
its prev/auth edges, the room's forward extremities, its state group, current state
and membership when it is a state event, the sender's transaction ID, its relation,
and the redaction it applies.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import orjson
from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update

from storage.database import Database, upsert
from storage.event_positions import EventPositions
from storage.schema import (
    current_state,
    event_auth,
    event_edges,
    event_relations,
    event_to_state_group,
    event_txn_ids,
    events,
    room_forward_extremities,
    room_memberships,
    rooms,
)
from storage.state import StateKey, StateStore
from storage.streams import highest_event_position


class StoredEvent(msgspec.Struct, frozen=True):
    event_id: str
    # The PDU's room_id, except for v12 create events, which have none in the PDU.
    room_id: str
    stream_ordering: int
    pdu: dict[str, Any]
    redacted_by: str | None
    rejected_reason: str | None
    outlier: bool

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def state_key(self) -> str | None:
        return self.pdu.get("state_key")

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def content(self) -> dict[str, Any]:
        content = self.pdu.get("content")
        return content if isinstance(content, dict) else {}


class NewEvent(msgspec.Struct, frozen=True):
    """An event that passed its checks, with what the room service knows about it."""

    event_id: str
    room_id: str
    pdu: dict[str, Any]
    # The state group of the state before this event (None only for the create event)
    # and the full state after it (used when a delta chain is long enough to snapshot).
    state_group_before: int | None
    state_after: Mapping[StateKey, str]
    # (user_id, device_id, txn_id) for idempotent client sends.
    txn: tuple[str, str, str] | None = None
    # (relates_to event ID, rel_type) from content["m.relates_to"].
    relation: tuple[str, str] | None = None
    # An event this one redacts, once the redaction rules allow it.
    redacts: str | None = None
    # Room version, for the first event of a new room.
    new_room_version: str | None = None
    # The room's whole current state after this event, when it is not simply the old
    # current state plus this event (a remote event that merges a fork).
    current_state: Mapping[StateKey, str] | None = None
    # A remote event that passed auth against the state before it but not against
    # current state (spec: "Soft failure"): kept in the graph with its state group,
    # but stored as an outlier, so clients never see it, and never a forward
    # extremity, so our own events do not build on it.
    soft_failed: bool = False


class BackfilledEvent(msgspec.Struct, frozen=True):
    """An older event fetched with /backfill, checked, with the state after it."""

    event_id: str
    pdu: dict[str, Any]
    state_after: Mapping[StateKey, str]
    rejected_reason: str | None = None


class PersistResult(msgspec.Struct, frozen=True):
    stream_ordering: int
    state_group: int


class EventStore:
    def __init__(self, db: Database, state: StateStore, cache_size: int = 10_000) -> None:
        self.db = db
        self.state = state
        self._cache_size = cache_size
        # Every insert into `events` takes its stream position from here (see
        # storage/event_positions.py); `load_positions` before the first.
        self.positions = EventPositions()
        # Events are immutable once stored, but for redacted_by, which this process
        # updates through `persist` and so keeps in step.
        self._cache: OrderedDict[str, StoredEvent] = OrderedDict()

    # --- writing -------------------------------------------------------------------

    async def load_positions(self) -> None:
        async with self.db.read() as conn:
            self.positions.load(await highest_event_position(conn))

    async def persist(self, new: NewEvent, now_ms: int) -> PersistResult:
        """Store an event of the room's graph. Its position stays open for the caller
        to announce the event (`RoomEvents.announce`) or give it up
        (`positions.finish`); a soft-failed event's is finished here."""
        with self.positions.taken() as position:
            result = await self._persist(new, now_ms, position)
        if new.soft_failed:
            self.positions.finish(position)  # never announced
        return result

    async def _persist(self, new: NewEvent, now_ms: int, stream_ordering: int) -> PersistResult:
        pdu = new.pdu
        state_key = pdu.get("state_key")
        db = self.db
        # Prebuilt statements through db.run: this transaction runs once per event, and
        # building and compiling its statements cost more than executing them. Only a
        # new room or a replaced current state need statements of their own.
        simple = new.new_room_version is None and new.current_state is None
        async with db.write_prebuilt() if simple else db.write() as conn:
            if new.new_room_version is not None:
                await conn.execute(
                    insert(rooms).values(
                        room_id=new.room_id,
                        room_version=new.new_room_version,
                        creator=pdu["sender"],
                        created_ts=now_ms,
                        is_public=False,
                    )
                )
            # A soft-failed event (see NewEvent.soft_failed) is an outlier with edges and
            # a state group, but touches no extremity, current state or membership.
            soft = new.soft_failed
            await db.run(conn, _INSERT_EVENT, _event_row(new.event_id, new.room_id, pdu, outlier=soft, stream_ordering=stream_ordering))
            prev_ids = list(pdu.get("prev_events", []))
            if prev_ids:
                await db.run(conn, _INSERT_EDGE, [{"event_id": new.event_id, "prev_event_id": p} for p in prev_ids])
                if not soft:
                    await db.run(conn, _DELETE_EXTREMITY, [{"room": new.room_id, "event": p} for p in prev_ids])
            auth_ids = list(pdu.get("auth_events", []))
            if auth_ids:
                await db.run(conn, _INSERT_AUTH, [{"event_id": new.event_id, "auth_id": a} for a in auth_ids])
            if not soft:
                await db.run(conn, _INSERT_EXTREMITY, {"room_id": new.room_id, "event_id": new.event_id})

            if state_key is not None:
                key = (pdu["type"], state_key)
                group = await self.state.store_group(
                    conn, new.room_id, new.state_group_before, {key: new.event_id}, new.state_after
                )
            if state_key is not None and not soft:
                await db.run(
                    conn,
                    db.upsert_statement(current_state, _CURRENT_STATE_COLUMNS, _CURRENT_STATE_KEY),
                    {"room_id": new.room_id, "type": key[0], "state_key": key[1], "event_id": new.event_id},
                )
                if pdu["type"] == "m.room.member":
                    member_row = _membership_row(new.room_id, new.event_id, pdu, stream_ordering)
                    await db.run(conn, db.upsert_statement(room_memberships, tuple(member_row), _MEMBERSHIP_KEY), member_row)
            elif state_key is None:
                assert new.state_group_before is not None
                group = new.state_group_before
            await db.run(conn, _INSERT_EVENT_STATE_GROUP, {"event_id": new.event_id, "state_group": group})

            if new.current_state is not None and not soft:
                await self._replace_current_state(conn, new.room_id, new.current_state)

            if new.txn is not None:
                user_id, device_id, txn_id = new.txn
                await db.run(
                    conn,
                    _INSERT_TXN,
                    {"user_id": user_id, "device_id": device_id, "txn_id": txn_id, "event_id": new.event_id, "created_ts": now_ms},
                )
            if new.relation is not None and not soft:
                await db.run(
                    conn,
                    _INSERT_RELATION,
                    {
                        "event_id": new.event_id,
                        "room_id": new.room_id,
                        "relates_to_id": new.relation[0],
                        "rel_type": new.relation[1],
                        "stream_ordering": stream_ordering,
                    },
                )
            if new.redacts is not None and not soft:
                await db.run(conn, _APPLY_REDACTION, {"target": new.redacts, "by": new.event_id})
        if new.redacts is not None and not new.soft_failed:
            self._cache.pop(new.redacts, None)
        if state_key is not None:
            self.state.remember(group, new.state_after)
        return PersistResult(stream_ordering, group)

    async def _replace_current_state(
        self, conn: Any, room_id: str, state: Mapping[StateKey, str]
    ) -> None:
        """Make current_state (and memberships) equal `state`, inside the caller's transaction."""
        rows = await conn.execute(
            select(current_state.c.type, current_state.c.state_key, current_state.c.event_id).where(
                current_state.c.room_id == room_id
            )
        )
        existing = {(row.type, row.state_key): row.event_id for row in rows}
        for key in existing.keys() - state.keys():
            await conn.execute(
                delete(current_state).where(
                    current_state.c.room_id == room_id, current_state.c.type == key[0], current_state.c.state_key == key[1]
                )
            )
        changed = {key: event_id for key, event_id in state.items() if existing.get(key) != event_id}
        for (event_type, state_key), event_id in changed.items():
            await upsert(
                conn,
                current_state,
                {"room_id": room_id, "type": event_type, "state_key": state_key, "event_id": event_id},
                ["room_id", "type", "state_key"],
            )
            if event_type != "m.room.member":
                continue
            row = (
                await conn.execute(
                    select(events.c.json, events.c.stream_ordering).where(events.c.event_id == event_id)
                )
            ).first()
            if row is None:
                continue
            member_row = _membership_row(room_id, event_id, event_from_json(row.json), int(row.stream_ordering))
            await upsert(conn, room_memberships, member_row, ["room_id", "user_id"])

    async def persist_outliers(self, room_id: str, pdus: Mapping[str, dict[str, Any]]) -> None:
        """Store events we hold only as state or auth chain (not part of our timeline)."""
        known = await self.get_events(pdus.keys())
        new = {event_id: pdu for event_id, pdu in pdus.items() if event_id not in known}
        if not new:
            return
        # Never announced: their positions are finished when the transaction ends.
        positions = [self.positions.take() for _ in new]
        try:
            async with self.db.write() as conn:
                for (event_id, pdu), position in zip(new.items(), positions, strict=True):
                    await conn.execute(
                        insert(events).values(_event_row(event_id, room_id, pdu, outlier=True, stream_ordering=position))
                    )
                    auth_ids = list(pdu.get("auth_events", []))
                    if auth_ids:
                        await conn.execute(insert(event_auth), [{"event_id": event_id, "auth_id": a} for a in auth_ids])
        finally:
            for position in positions:
                self.positions.finish(position)

    async def store_remote_invite(self, room_id: str, event_id: str, pdu: dict[str, Any], invitee: str) -> StoredEvent:
        """An invite into a room we are not in: kept as an outlier, with the invitee's
        membership row pointing at it so the invite shows up for them. Its position
        stays open for the caller to announce it (as `persist`)."""
        with self.positions.taken() as stream_ordering:
            async with self.db.write() as conn:
                await conn.execute(
                    insert(events).values(_event_row(event_id, room_id, pdu, outlier=True, stream_ordering=stream_ordering))
                )
                await upsert(
                    conn, room_memberships, _membership_row(room_id, event_id, pdu, stream_ordering), ["room_id", "user_id"]
                )
        return StoredEvent(event_id, room_id, stream_ordering, pdu, None, None, True)

    async def store_outlier_membership(self, room_id: str, event_id: str, pdu: dict[str, Any]) -> StoredEvent:
        """A member event of a room we are not in (a leave rejecting a remote invite,
        a knock on a remote room): an outlier the member's membership row points at.
        An existing outlier row of the same event is reused. A new row's position
        stays open for the caller to announce it (as `persist`)."""
        existing = await self.get_event(event_id)
        position = self.positions.taken() if existing is None else contextlib.nullcontext(existing.stream_ordering)
        with position as stream_ordering:
            async with self.db.write() as conn:
                if existing is None:
                    await conn.execute(
                        insert(events).values(
                            _event_row(event_id, room_id, pdu, outlier=True, stream_ordering=stream_ordering)
                        )
                    )
                await upsert(
                    conn, room_memberships, _membership_row(room_id, event_id, pdu, stream_ordering), ["room_id", "user_id"]
                )
        return StoredEvent(event_id, room_id, stream_ordering, pdu, None, None, True)

    async def min_stream_ordering(self) -> int:
        async with self.db.read() as conn:
            value = (await conn.execute(select(func.min(events.c.stream_ordering)))).scalar()
        return int(value if value is not None else 1)

    async def backward_extremities(self, room_id: str, scan: int = 200) -> list[str]:
        """prev_events of the room's oldest `scan` timeline events that we do not hold
        in the graph (as a timeline event, or a soft-failed one with its state): where
        /backfill has to continue. Empty once history reaches the create event."""
        oldest = (
            select(events.c.event_id)
            .where(events.c.room_id == room_id, events.c.outlier.is_(False))
            .order_by(events.c.stream_ordering.asc())
            .limit(scan)
            .subquery()
        )
        query = select(event_edges.c.prev_event_id).where(event_edges.c.event_id.in_(select(oldest.c.event_id)))
        async with self.db.read() as conn:
            prev_ids = list(dict.fromkeys(row.prev_event_id for row in await conn.execute(query)))
        held = await self.held_in_graph(prev_ids)
        return [p for p in prev_ids if p not in held]

    async def held_in_graph(self, event_ids: list[str]) -> set[str]:
        """The events among `event_ids` stored as part of the graph (with a state group),
        as opposed to unknown or kept only as state / auth chain outliers."""
        return set(await self.get_state_groups_of(list(event_ids)))

    async def persist_backfilled(self, room_id: str, backfilled: list[BackfilledEvent]) -> list[StoredEvent]:
        """Store history older than anything the room holds, oldest first in `backfilled`.

        Each event gets an explicit stream_ordering below the smallest in the database
        (negative ones, decreasing into the past, while new events take theirs upwards
        from the largest: storage/event_positions.py), so
        /messages sorts them before everything we have and /sync, which reads forward
        from a position, never sees them. Events we held as outliers (state and auth
        chain from the join) are moved into the timeline. Neither current state nor
        memberships change: this is the past. The caller serialises calls."""
        if not backfilled:
            return []
        lowest = await self.min_stream_ordering()
        known = await self.get_events([b.event_id for b in backfilled])
        stored: list[StoredEvent] = []
        states: list[tuple[int, Mapping[StateKey, str]]] = []
        async with self.db.write() as conn:
            prev_group: int | None = None
            prev_state: Mapping[StateKey, str] = {}
            # The newest gets lowest - 1, the oldest the smallest value.
            position = lowest - len(backfilled)
            for item in backfilled:
                row = _event_row(item.event_id, room_id, item.pdu, outlier=False, stream_ordering=position)
                row["rejected_reason"] = item.rejected_reason
                if item.event_id in known:
                    await conn.execute(
                        update(events)
                        .where(events.c.event_id == item.event_id)
                        .values(stream_ordering=position, outlier=False, rejected_reason=item.rejected_reason)
                    )
                else:
                    await conn.execute(insert(events).values(row))
                    auth_ids = list(item.pdu.get("auth_events", []))
                    if auth_ids:
                        await conn.execute(
                            insert(event_auth), [{"event_id": item.event_id, "auth_id": a} for a in auth_ids]
                        )
                prev_ids = list(item.pdu.get("prev_events", []))
                if prev_ids:
                    await conn.execute(
                        insert(event_edges), [{"event_id": item.event_id, "prev_event_id": p} for p in prev_ids]
                    )
                delta = {k: v for k, v in item.state_after.items() if prev_state.get(k) != v}
                if prev_group is not None and not (prev_state.keys() - item.state_after.keys()):
                    group = (
                        prev_group
                        if not delta
                        else await self.state.store_group(conn, room_id, prev_group, delta, item.state_after)
                    )
                else:
                    group = await self.state.store_group(conn, room_id, None, {}, item.state_after)
                await conn.execute(insert(event_to_state_group).values(event_id=item.event_id, state_group=group))
                relation = _relation_of(item.pdu)
                if relation is not None and item.rejected_reason is None:
                    await conn.execute(
                        insert(event_relations).values(
                            event_id=item.event_id,
                            room_id=room_id,
                            relates_to_id=relation[0],
                            rel_type=relation[1],
                            stream_ordering=position,
                        )
                    )
                states.append((group, item.state_after))
                prev_group, prev_state = group, item.state_after
                stored.append(
                    StoredEvent(item.event_id, room_id, position, item.pdu, None, item.rejected_reason, False)
                )
                position += 1
        for event in stored:
            self._cache.pop(event.event_id, None)
        for group, state in states:
            self.state.remember(group, state)
        return stored

    async def store_state_snapshot(self, room_id: str, state: Mapping[StateKey, str]) -> int:
        """A state group holding exactly `state` (for states no single event ends in)."""
        async with self.db.write() as conn:
            group = await self.state.store_group(conn, room_id, None, {}, state)
        self.state.remember(group, state)
        return group

    # --- reading -------------------------------------------------------------------

    def _remember(self, event: StoredEvent) -> None:
        self._cache[event.event_id] = event
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """The stored events among `event_ids` (unknown IDs are left out)."""
        wanted = list(dict.fromkeys(event_ids))
        found: dict[str, StoredEvent] = {}
        missing: list[str] = []
        for event_id in wanted:
            cached = self._cache.get(event_id)
            if cached is None:
                missing.append(event_id)
            else:
                found[event_id] = cached
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            async with self.db.read() as conn:
                rows = await conn.execute(_EVENT_COLUMNS.where(events.c.event_id.in_(chunk)))
                for row in rows:
                    event = _stored(row)
                    self._remember(event)
                    found[event.event_id] = event
        return found

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_room_version(self, room_id: str) -> str | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(rooms.c.room_version).where(rooms.c.room_id == room_id))).first()
        return row[0] if row else None

    async def get_forward_extremities(self, room_id: str) -> list[tuple[str, int]]:
        """(event_id, depth) of the room's current tips."""
        query = (
            select(room_forward_extremities.c.event_id, events.c.depth)
            .join(events, events.c.event_id == room_forward_extremities.c.event_id)
            .where(room_forward_extremities.c.room_id == room_id)
        )
        async with self.db.read() as conn:
            return [(row.event_id, int(row.depth)) for row in await conn.execute(query)]

    async def get_state_group_of(self, event_id: str) -> int | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(event_to_state_group.c.state_group).where(event_to_state_group.c.event_id == event_id)
                )
            ).first()
        return int(row[0]) if row else None

    async def get_state_groups_of(self, event_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            query = select(event_to_state_group.c.event_id, event_to_state_group.c.state_group).where(
                event_to_state_group.c.event_id.in_(chunk)
            )
            async with self.db.read() as conn:
                found.update({row.event_id: int(row.state_group) for row in await conn.execute(query)})
        return found

    async def last_event_at_or_before(self, room_id: str, stream_ordering: int) -> str | None:
        query = (
            select(events.c.event_id)
            .where(
                events.c.room_id == room_id,
                events.c.stream_ordering <= stream_ordering,
                events.c.outlier.is_(False),
                events.c.rejected_reason.is_(None),
            )
            .order_by(events.c.stream_ordering.desc())
            .limit(1)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return row[0] if row else None

    async def last_membership_position(self, room_id: str, user_id: str, membership: str) -> int | None:
        """The stream ordering of the user's latest member event with `membership`."""
        query = (
            select(events.c.stream_ordering, events.c.json)
            .where(
                events.c.room_id == room_id,
                events.c.type == "m.room.member",
                events.c.state_key == user_id,
                events.c.outlier.is_(False),
                events.c.rejected_reason.is_(None),
            )
            .order_by(events.c.stream_ordering.desc())
        )
        async with self.db.read() as conn:
            for row in await conn.execute(query):
                content = event_from_json(row.json).get("content")
                if isinstance(content, dict) and content.get("membership") == membership:
                    return int(row.stream_ordering)
        return None

    async def get_current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        query = select(current_state.c.type, current_state.c.state_key, current_state.c.event_id).where(
            current_state.c.room_id == room_id
        )
        async with self.db.read() as conn:
            return {(row.type, row.state_key): row.event_id for row in await conn.execute(query)}

    async def event_id_for_txn(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        rows = await self.db.fetch(_TXN_EVENT, {"user_id": user_id, "device_id": device_id, "txn_id": txn_id})
        return rows[0][0] if rows else None

    async def txn_ids_for(self, user_id: str, device_id: str, event_ids: list[str]) -> dict[str, str]:
        """event_id -> txn_id for the events among `event_ids` that this device sent."""
        if not event_ids:
            return {}
        if len(event_ids) == 1:
            # The usual case (a sync bringing the device's own new message), prebuilt.
            params = {"user_id": user_id, "device_id": device_id, "event_id": event_ids[0]}
            return dict(await self.db.fetch(_TXN_OF_EVENT, params))
        query = select(event_txn_ids.c.event_id, event_txn_ids.c.txn_id).where(
            event_txn_ids.c.user_id == user_id,
            event_txn_ids.c.device_id == device_id,
            event_txn_ids.c.event_id.in_(event_ids),
        )
        async with self.db.read() as conn:
            return {row.event_id: row.txn_id for row in await conn.execute(query)}

    async def max_stream_ordering(self) -> int:
        async with self.db.read() as conn:
            value = (await conn.execute(select(func.max(events.c.stream_ordering)))).scalar()
        return int(value or 0)

    async def room_events(
        self,
        room_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        backwards: bool,
        limit: int,
        types: list[str] | None = None,
        not_types: list[str] | None = None,
        senders: list[str] | None = None,
        not_senders: list[str] | None = None,
        contains_url: bool | None = None,
    ) -> list[StoredEvent]:
        """Accepted room events with after < stream_ordering < before, newest first when
        `backwards`, else oldest first."""
        if not (types or not_types or senders or not_senders) and contains_url is None:
            # Every incremental /sync and most /messages pages: a prebuilt query.
            statement = _room_events_query(after is not None, before is not None, backwards)
            rows = await self.db.fetch(statement, {"room_id": room_id, "after": after, "before": before, "limit": limit})
            found = [_stored_from_tuple(row) for row in rows]
            for event in found:
                self._remember(event)
            return found
        query = _EVENT_COLUMNS.where(
            events.c.room_id == room_id, events.c.outlier.is_(False), events.c.rejected_reason.is_(None)
        )
        if after is not None:
            query = query.where(events.c.stream_ordering > after)
        if before is not None:
            query = query.where(events.c.stream_ordering < before)
        if types:
            query = query.where(or_(*[_type_matches(t) for t in types]))
        if not_types:
            query = query.where(and_(*[~_type_matches(t) for t in not_types]))
        if senders:
            query = query.where(events.c.sender.in_(senders))
        if not_senders:
            query = query.where(events.c.sender.not_in(not_senders))
        if contains_url is not None:
            has_url = events.c.json.like('%"url":%')
            query = query.where(has_url if contains_url else ~has_url)
        order = events.c.stream_ordering.desc() if backwards else events.c.stream_ordering.asc()
        query = query.order_by(order).limit(limit)
        async with self.db.read() as conn:
            found = [_stored(row) for row in await conn.execute(query)]
        for event in found:
            self._remember(event)
        return found

    async def stream_ordering_of(self, event_id: str) -> int | None:
        event = await self.get_event(event_id)
        return event.stream_ordering if event else None

    async def relations(
        self,
        parent_id: str,
        *,
        room_id: str | None = None,
        rel_type: str | None,
        before: int | None,
        after: int | None,
        backwards: bool,
        limit: int,
    ) -> list[StoredEvent]:
        query = select(event_relations.c.event_id).where(event_relations.c.relates_to_id == parent_id)
        if room_id is not None:
            # Relations only count within the parent's room: an event elsewhere that
            # names this parent must not surface here.
            query = query.where(event_relations.c.room_id == room_id)
        if rel_type is not None:
            query = query.where(event_relations.c.rel_type == rel_type)
        if before is not None:
            query = query.where(event_relations.c.stream_ordering < before)
        if after is not None:
            query = query.where(event_relations.c.stream_ordering > after)
        order = event_relations.c.stream_ordering
        query = query.order_by(order.desc() if backwards else order.asc()).limit(limit)
        async with self.db.read() as conn:
            ids = [row.event_id for row in await conn.execute(query)]
        found = await self.get_events(ids)
        return [found[i] for i in ids if i in found]

    async def thread_roots(self, room_id: str, *, before: int | None, limit: int) -> list[tuple[str, int]]:
        """(root event ID, stream ordering of its latest reply), latest activity first."""
        latest = func.max(event_relations.c.stream_ordering).label("latest")
        query = (
            select(event_relations.c.relates_to_id, latest)
            .where(event_relations.c.room_id == room_id, event_relations.c.rel_type == "m.thread")
            .group_by(event_relations.c.relates_to_id)
            .order_by(latest.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.having(latest < before)
        async with self.db.read() as conn:
            return [(row.relates_to_id, int(row.latest)) for row in await conn.execute(query)]


def _event_row(event_id: str, room_id: str, pdu: Mapping[str, Any], *, outlier: bool, stream_ordering: int) -> dict[str, Any]:
    """The `events` row of a PDU."""
    return {
        "stream_ordering": stream_ordering,
        "event_id": event_id,
        "room_id": room_id,
        "depth": pdu.get("depth", 0),
        "type": pdu["type"],
        "state_key": pdu.get("state_key"),
        "sender": pdu["sender"],
        "origin_server_ts": pdu.get("origin_server_ts", 0),
        "outlier": outlier,
        "rejected_reason": None,
        "redacted_by": None,
        "json": json_text(pdu),
    }


_decode_json = msgspec.json.Decoder().decode


def event_from_json(text: str) -> dict[str, Any]:
    """A stored event's JSON, parsed by msgspec: under half the standard library's time,
    and a quarter less memory per cached event (it shares dict keys between events,
    where the standard library makes each event its own). The standard library parses
    what msgspec refuses (a remote event's lone surrogate escapes, 1e400)."""
    try:
        return _decode_json(text)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, UnicodeEncodeError):
        return json.loads(text)  # type: ignore[no-any-return]


def json_text(value: Any) -> str:
    """Compact JSON, by orjson (a tenth of the standard library's time, for every
    event stored); the standard library writes what orjson refuses (a remote event's
    lone surrogate escapes, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _membership_row(room_id: str, event_id: str, pdu: Mapping[str, Any], stream_ordering: int) -> dict[str, Any]:
    """The `room_memberships` row a member event makes."""
    content = pdu.get("content")
    membership = content.get("membership", "leave") if isinstance(content, Mapping) else "leave"
    return {
        "room_id": room_id,
        "user_id": pdu["state_key"],
        "membership": membership,
        "event_id": event_id,
        "stream_ordering": stream_ordering,
        "sender": pdu.get("sender", ""),
        "forgotten": False,
    }


def _relation_of(pdu: Mapping[str, Any]) -> tuple[str, str] | None:
    content = pdu.get("content")
    relates = content.get("m.relates_to") if isinstance(content, Mapping) else None
    if not isinstance(relates, Mapping):
        return None
    event_id, rel_type = relates.get("event_id"), relates.get("rel_type")
    if isinstance(event_id, str) and isinstance(rel_type, str):
        return event_id, rel_type
    return None


def _type_matches(pattern: str) -> Any:
    # Filters allow a trailing '*' wildcard on event types.
    if pattern.endswith("*"):
        prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return events.c.type.like(prefix + "%", escape="\\")
    return events.c.type == pattern


def _prebuilt_insert(table: Any, *columns: str) -> Any:
    return insert(table).values({c: bindparam(c) for c in columns})


_INSERT_EVENT = _prebuilt_insert(
    events,
    "stream_ordering", "event_id", "room_id", "depth", "type", "state_key", "sender", "origin_server_ts", "outlier",
    "rejected_reason", "redacted_by", "json",
)  # fmt: skip
_INSERT_EDGE = _prebuilt_insert(event_edges, "event_id", "prev_event_id")
_INSERT_AUTH = _prebuilt_insert(event_auth, "event_id", "auth_id")
_INSERT_EXTREMITY = _prebuilt_insert(room_forward_extremities, "room_id", "event_id")
_DELETE_EXTREMITY = delete(room_forward_extremities).where(
    room_forward_extremities.c.room_id == bindparam("room"), room_forward_extremities.c.event_id == bindparam("event")
)
_INSERT_EVENT_STATE_GROUP = _prebuilt_insert(event_to_state_group, "event_id", "state_group")
_INSERT_TXN = _prebuilt_insert(event_txn_ids, "user_id", "device_id", "txn_id", "event_id", "created_ts")
_INSERT_RELATION = _prebuilt_insert(event_relations, "event_id", "room_id", "relates_to_id", "rel_type", "stream_ordering")
_APPLY_REDACTION = (
    update(events)
    .where(events.c.event_id == bindparam("target"), events.c.redacted_by.is_(None))
    .values(redacted_by=bindparam("by"))
)
_CURRENT_STATE_COLUMNS = ("room_id", "type", "state_key", "event_id")
_CURRENT_STATE_KEY = ("room_id", "type", "state_key")
_MEMBERSHIP_KEY = ("room_id", "user_id")
_TXN_EVENT = select(event_txn_ids.c.event_id).where(
    event_txn_ids.c.user_id == bindparam("user_id"),
    event_txn_ids.c.device_id == bindparam("device_id"),
    event_txn_ids.c.txn_id == bindparam("txn_id"),
)
_TXN_OF_EVENT = select(event_txn_ids.c.event_id, event_txn_ids.c.txn_id).where(
    event_txn_ids.c.user_id == bindparam("user_id"),
    event_txn_ids.c.device_id == bindparam("device_id"),
    event_txn_ids.c.event_id == bindparam("event_id"),
)

_EVENT_COLUMNS = select(
    events.c.event_id,
    events.c.room_id,
    events.c.stream_ordering,
    events.c.json,
    events.c.redacted_by,
    events.c.rejected_reason,
    events.c.outlier,
)


_ROOM_EVENTS: dict[tuple[bool, bool, bool], Any] = {}


def _room_events_query(after: bool, before: bool, backwards: bool) -> Any:
    """room_events without filters, built once per shape (bound: room_id, after,
    before, limit)."""
    key = (after, before, backwards)
    query = _ROOM_EVENTS.get(key)
    if query is None:
        query = _EVENT_COLUMNS.where(
            events.c.room_id == bindparam("room_id"), events.c.outlier.is_(False), events.c.rejected_reason.is_(None)
        )
        if after:
            query = query.where(events.c.stream_ordering > bindparam("after"))
        if before:
            query = query.where(events.c.stream_ordering < bindparam("before"))
        order = events.c.stream_ordering.desc() if backwards else events.c.stream_ordering.asc()
        query = _ROOM_EVENTS[key] = query.order_by(order).limit(bindparam("limit"))
    return query


def _stored_from_tuple(row: tuple[Any, ...]) -> StoredEvent:
    """A StoredEvent from an _EVENT_COLUMNS row as `Database.fetch` returns it."""
    event_id, room_id, stream_ordering, raw_json, redacted_by, rejected_reason, outlier = row
    return StoredEvent(
        event_id=event_id,
        room_id=room_id,
        stream_ordering=int(stream_ordering),
        pdu=event_from_json(raw_json),
        redacted_by=redacted_by,
        rejected_reason=rejected_reason,
        outlier=bool(outlier),
    )


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        event_id=row.event_id,
        room_id=row.room_id,
        stream_ordering=int(row.stream_ordering),
        pdu=event_from_json(row.json),
        redacted_by=row.redacted_by,
        rejected_reason=row.rejected_reason,
        outlier=bool(row.outlier),
    )

