"""Queries for the server's operator: listing users and rooms, purging rooms, blocked
rooms, quarantined media, event reports, and the server notices room lookup."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.accounts import User, _user
from storage.database import Database
from storage.schema import (
    blocked_rooms,
    current_state,
    devices,
    event_reports,
    events,
    local_media,
    metadata,
    quarantined_media,
    room_memberships,
    rooms,
    state_group_entries,
    state_groups,
    users,
)
from storage.streams import keep_event_high_water

# State of a room that the admin room list shows, by event type -> content key.
SUMMARY_STATE = {
    "m.room.name": "name",
    "m.room.canonical_alias": "alias",
    "m.room.topic": "topic",
    "m.room.avatar": "url",
    "m.room.join_rules": "join_rule",
    "m.room.guest_access": "guest_access",
    "m.room.history_visibility": "history_visibility",
    "m.room.encryption": "algorithm",
    "m.room.tombstone": "replacement_room",
}

# Tables that name a room but hold a user's own data, which outlives the room.
_KEPT_ON_PURGE = {"room_key_backup_keys", "blocked_rooms"}

_MXC_RE = re.compile(r"mxc://([A-Za-z0-9.:\[\]-]+)/([A-Za-z0-9_-]+)")


class RoomSummary(msgspec.Struct, frozen=True):
    room_id: str
    room_version: str
    creator: str | None
    created_ts: int
    is_public: bool
    # event type -> the content of the current state event of that type (state_key "")
    state: dict[str, dict[str, Any]]
    state_events: int
    joined_members: int
    room_type: str | None


class EventReport(msgspec.Struct, frozen=True):
    id: int
    room_id: str
    event_id: str
    user_id: str
    reason: str | None
    score: int | None
    received_ts: int


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AdminStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- users ---------------------------------------------------------------------

    async def list_users(
        self,
        *,
        offset: int,
        limit: int,
        name: str | None,
        user_id: str | None,
        deactivated: bool,
        admins: bool | None,
        exclude: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> tuple[list[User], int]:
        """A page of users ordered by user ID, and how many match in total."""
        conditions = []
        if name:
            pattern = f"%{_like_escape(name.lower())}%"
            conditions.append(
                or_(
                    func.lower(users.c.user_id).like(pattern, escape="\\"),
                    func.lower(users.c.displayname).like(pattern, escape="\\"),
                )
            )
        elif user_id:
            conditions.append(func.lower(users.c.user_id).like(f"%{_like_escape(user_id.lower())}%", escape="\\"))
        if not deactivated:
            conditions.append(users.c.deactivated.is_(False))
        if admins is not None:
            conditions.append(users.c.is_admin.is_(admins))
        if exclude:
            conditions.append(users.c.user_id.not_in(list(exclude)))
        query = select(users).where(*conditions).order_by(users.c.user_id).offset(offset).limit(limit)
        count = select(func.count()).select_from(users).where(*conditions)
        async with self.db.read() as conn:
            found = [_user(row) for row in await conn.execute(query)]
            total = int((await conn.execute(count)).scalar_one())
        return found, total

    async def last_seen(self, user_id: str) -> int | None:
        async with self.db.read() as conn:
            value = (
                await conn.execute(select(func.max(devices.c.last_seen_ts)).where(devices.c.user_id == user_id))
            ).scalar()
        return int(value) if value is not None else None

    async def set_deactivated(self, user_id: str, deactivated: bool) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(users).where(users.c.user_id == user_id).values(deactivated=deactivated))

    async def active_local_user_ids(self) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(users.c.user_id).where(users.c.deactivated.is_(False)).order_by(users.c.user_id)
            )
            return [row.user_id for row in rows]

    async def first_admin(self) -> str | None:
        query = (
            select(users.c.user_id)
            .where(users.c.is_admin.is_(True), users.c.deactivated.is_(False))
            .order_by(users.c.user_id)
            .limit(1)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return row.user_id if row else None

    # --- rooms ---------------------------------------------------------------------

    async def room_summaries(self, room_ids: list[str] | None = None) -> list[RoomSummary]:
        """Every room (or the given ones) with the state an admin looks at."""
        room_query = select(rooms)
        if room_ids is not None:
            room_query = room_query.where(rooms.c.room_id.in_(room_ids))
        state_query = (
            select(current_state.c.room_id, events.c.type, events.c.json)
            .join(events, events.c.event_id == current_state.c.event_id)
            .where(current_state.c.type.in_([*SUMMARY_STATE, "m.room.create"]), current_state.c.state_key == "")
        )
        counts_query = select(current_state.c.room_id, func.count()).group_by(current_state.c.room_id)
        joined_query = (
            select(room_memberships.c.room_id, func.count())
            .where(room_memberships.c.membership == "join")
            .group_by(room_memberships.c.room_id)
        )
        if room_ids is not None:
            state_query = state_query.where(current_state.c.room_id.in_(room_ids))
            counts_query = counts_query.where(current_state.c.room_id.in_(room_ids))
            joined_query = joined_query.where(room_memberships.c.room_id.in_(room_ids))
        async with self.db.read() as conn:
            room_rows = list(await conn.execute(room_query))
            state: dict[str, dict[str, dict[str, Any]]] = {}
            for row in await conn.execute(state_query):
                content = json.loads(row.json).get("content")
                state.setdefault(row.room_id, {})[row.type] = content if isinstance(content, dict) else {}
            counts = {row[0]: int(row[1]) for row in await conn.execute(counts_query)}
            joined = {row[0]: int(row[1]) for row in await conn.execute(joined_query)}
        out = []
        for row in room_rows:
            room_state = state.get(row.room_id, {})
            room_type = room_state.get("m.room.create", {}).get("type")
            out.append(
                RoomSummary(
                    room_id=row.room_id,
                    room_version=row.room_version,
                    creator=row.creator,
                    created_ts=int(row.created_ts),
                    is_public=bool(row.is_public),
                    state=room_state,
                    state_events=counts.get(row.room_id, 0),
                    joined_members=joined.get(row.room_id, 0),
                    room_type=room_type if isinstance(room_type, str) else None,
                )
            )
        return out

    async def all_forgotten(self, room_id: str) -> bool:
        query = select(func.count()).where(
            room_memberships.c.room_id == room_id, room_memberships.c.forgotten.is_(False)
        )
        async with self.db.read() as conn:
            return int((await conn.execute(query.select_from(room_memberships))).scalar_one()) == 0

    async def purge_room(self, room_id: str) -> None:
        """Delete every trace of the room: events, graph, state, memberships, aliases,
        and any other table (of any module) that names the room."""
        room_event_ids = select(events.c.event_id).where(events.c.room_id == room_id)
        room_groups = select(state_groups.c.id).where(state_groups.c.room_id == room_id)
        async with self.db.write() as conn:
            await conn.execute(delete(state_group_entries).where(state_group_entries.c.group_id.in_(room_groups)))
            for table in metadata.sorted_tables:
                if table.name in _KEPT_ON_PURGE or table.name in ("events", "rooms"):
                    continue
                if "room_id" in table.c:
                    continue
                if "event_id" in table.c:
                    await conn.execute(delete(table).where(table.c.event_id.in_(room_event_ids)))
            for table in metadata.sorted_tables:
                if table.name in _KEPT_ON_PURGE or table.name in ("events", "rooms"):
                    continue
                if "room_id" in table.c:
                    await conn.execute(delete(table).where(table.c.room_id == room_id))
            await keep_event_high_water(conn)
            await conn.execute(delete(events).where(events.c.room_id == room_id))
            await conn.execute(delete(rooms).where(rooms.c.room_id == room_id))

    async def block_room(self, room_id: str, user_id: str, now_ms: int) -> None:
        try:
            async with self.db.write() as conn:
                await conn.execute(insert(blocked_rooms).values(room_id=room_id, user_id=user_id, blocked_ts=now_ms))
        except IntegrityError:
            pass

    async def unblock_room(self, room_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(blocked_rooms).where(blocked_rooms.c.room_id == room_id))

    async def room_blocked_by(self, room_id: str) -> str | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(blocked_rooms.c.user_id).where(blocked_rooms.c.room_id == room_id))
            ).first()
        return row.user_id if row else None

    async def media_in_room(self, room_id: str) -> set[tuple[str, str]]:
        """(server_name, media_id) of every mxc:// URI in the room's events."""
        found: set[tuple[str, str]] = set()
        query = select(events.c.json).where(events.c.room_id == room_id, events.c.json.like("%mxc://%"))
        async with self.db.read() as conn:
            for row in await conn.execute(query):
                found.update(_MXC_RE.findall(row.json))
        return found

    # --- media ---------------------------------------------------------------------

    async def quarantine(self, media: set[tuple[str, str]], by: str, now_ms: int) -> int:
        """Quarantine media; returns how many were not quarantined before."""
        added = 0
        async with self.db.write() as conn:
            for server_name, media_id in sorted(media):
                exists = (
                    await conn.execute(
                        select(quarantined_media.c.media_id).where(
                            quarantined_media.c.server_name == server_name, quarantined_media.c.media_id == media_id
                        )
                    )
                ).first()
                if exists is None:
                    await conn.execute(
                        insert(quarantined_media).values(
                            server_name=server_name, media_id=media_id, quarantined_by=by, quarantined_ts=now_ms
                        )
                    )
                    added += 1
        return added

    async def unquarantine(self, server_name: str, media_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                delete(quarantined_media).where(
                    quarantined_media.c.server_name == server_name, quarantined_media.c.media_id == media_id
                )
            )

    async def is_quarantined(self, server_name: str, media_id: str) -> bool:
        query = select(quarantined_media.c.media_id).where(
            quarantined_media.c.server_name == server_name, quarantined_media.c.media_id == media_id
        )
        async with self.db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def media_of_user(self, user_id: str) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(local_media.c.media_id).where(local_media.c.user_id == user_id))
            return [row.media_id for row in rows]

    # --- event reports -------------------------------------------------------------

    async def event_reports(
        self,
        *,
        offset: int,
        limit: int,
        backwards: bool,
        user_id: str | None,
        room_id: str | None,
        event_sender: str | None,
    ) -> tuple[list[tuple[EventReport, str | None]], int]:
        """A page of reports with the sender of each reported event, and the total."""
        conditions = []
        if user_id:
            conditions.append(event_reports.c.user_id == user_id)
        if room_id:
            conditions.append(event_reports.c.room_id == room_id)
        if event_sender:
            conditions.append(events.c.sender == event_sender)
        base = select(event_reports, events.c.sender.label("event_sender")).outerjoin(
            events, events.c.event_id == event_reports.c.event_id
        )
        order = event_reports.c.id.desc() if backwards else event_reports.c.id.asc()
        query = base.where(*conditions).order_by(order).offset(offset).limit(limit)
        count = (
            select(func.count())
            .select_from(event_reports.outerjoin(events, events.c.event_id == event_reports.c.event_id))
            .where(*conditions)
        )
        async with self.db.read() as conn:
            rows = list(await conn.execute(query))
            total = int((await conn.execute(count)).scalar_one())
        return [(_report(row), row.event_sender) for row in rows], total

    async def event_report(self, report_id: int) -> EventReport | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(event_reports).where(event_reports.c.id == report_id))).first()
        return _report(row) if row else None

    # --- server notices ------------------------------------------------------------

    async def notice_room_for(self, system_user: str, user_id: str) -> str | None:
        """A room the system user is joined to and the user is invited to or joined."""
        system = room_memberships.alias("system")
        target = room_memberships.alias("target")
        query = (
            select(target.c.room_id)
            .join(system, system.c.room_id == target.c.room_id)
            .where(
                target.c.user_id == user_id,
                target.c.membership.in_(["invite", "join"]),
                system.c.user_id == system_user,
                system.c.membership == "join",
            )
            .order_by(target.c.stream_ordering.desc())
            .limit(1)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return row.room_id if row else None


def _report(row: Any) -> EventReport:
    m = row._mapping
    return EventReport(
        id=int(m["id"]),
        room_id=m["room_id"],
        event_id=m["event_id"],
        user_id=m["user_id"],
        reason=m["reason"],
        score=m["score"],
        received_ts=int(m["received_ts"]),
    )
