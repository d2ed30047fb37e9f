"""Read queries the /sync builder needs over rooms, events and memberships."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, func, select

from storage.database import Database
from storage.rooms import Membership, _membership
from storage.schema import events, room_memberships, rooms


class SyncQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def memberships(self, user_id: str) -> list[Membership]:
        """Every room the user has a membership in and did not forget."""
        query = select(room_memberships).where(
            room_memberships.c.user_id == user_id, room_memberships.c.forgotten.is_(False)
        )
        async with self.db.read() as conn:
            return [_membership(row) for row in await conn.execute(query)]

    async def rooms_with_events(self, room_ids: list[str], after: int, upto: int) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(room_ids), 500):
            query = (
                select(events.c.room_id)
                .where(
                    events.c.room_id.in_(room_ids[start : start + 500]),
                    events.c.stream_ordering > after,
                    events.c.stream_ordering <= upto,
                )
                .distinct()
            )
            async with self.db.read() as conn:
                found.update(row[0] for row in await conn.execute(query))
        return found

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        """Everyone joined to a room the user is joined to (the user included)."""
        mine = room_memberships.alias("mine")
        other = room_memberships.alias("other")
        query = (
            select(other.c.user_id)
            .join(mine, mine.c.room_id == other.c.room_id)
            .where(mine.c.user_id == user_id, mine.c.membership == "join", other.c.membership == "join")
            .distinct()
        )
        async with self.db.read() as conn:
            found = {row[0] for row in await conn.execute(query)}
        found.add(user_id)
        return found

    async def membership_changes(self, room_ids: Iterable[str], after: int, upto: int) -> list[Membership]:
        """Current memberships in these rooms that were set in (after, upto]."""
        ids = list(room_ids)
        found: list[Membership] = []
        for start in range(0, len(ids), 500):
            query = select(room_memberships).where(
                room_memberships.c.room_id.in_(ids[start : start + 500]),
                room_memberships.c.stream_ordering > after,
                room_memberships.c.stream_ordering <= upto,
            )
            async with self.db.read() as conn:
                found.extend(_membership(row) for row in await conn.execute(query))
        return found

    async def joined_members(self, room_id: str) -> list[str]:
        query = select(room_memberships.c.user_id).where(
            room_memberships.c.room_id == room_id, room_memberships.c.membership == "join"
        )
        async with self.db.read() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def latest_event_ids(self, room_ids: list[str], upto: int, per_room: int) -> dict[str, list[str]]:
        """The IDs of each room's newest `per_room` accepted events at or before `upto`,
        newest first: the timelines of a whole initial sync in one query instead of
        one per room. Each room's floor (its per_room-th newest position) is a
        correlated subquery that reads at most per_room index entries, and the events
        are then a range on (room_id, stream_ordering), so a long room costs no more
        than a short one."""
        found: dict[str, list[str]] = {r: [] for r in room_ids}
        accepted = (events.c.outlier.is_(False), events.c.rejected_reason.is_(None))
        inner = events.alias("newest")
        for start in range(0, len(room_ids), 500):
            floor = (
                select(inner.c.stream_ordering)
                .where(
                    inner.c.room_id == rooms.c.room_id,
                    inner.c.stream_ordering <= upto,
                    inner.c.outlier.is_(False),
                    inner.c.rejected_reason.is_(None),
                )
                .order_by(inner.c.stream_ordering.desc())
                .limit(1)
                .offset(per_room - 1)
                .scalar_subquery()
            )
            floors = select(rooms.c.room_id, floor.label("floor")).where(rooms.c.room_id.in_(room_ids[start : start + 500])).subquery()
            query = (
                select(events.c.room_id, events.c.event_id)
                .join_from(
                    floors,
                    events,
                    and_(events.c.room_id == floors.c.room_id, events.c.stream_ordering >= func.coalesce(floors.c.floor, 0)),
                )
                .where(events.c.stream_ordering <= upto, *accepted)
                .order_by(events.c.room_id, events.c.stream_ordering.desc())
            )
            async with self.db.read() as conn:
                for row in await conn.execute(query):
                    found[row.room_id].append(row.event_id)
        return found

    async def members_of(self, room_ids: list[str], memberships: tuple[str, ...]) -> dict[str, list[Membership]]:
        """Each room's members with one of `memberships`, ordered by user ID."""
        found: dict[str, list[Membership]] = {r: [] for r in room_ids}
        for start in range(0, len(room_ids), 500):
            query = (
                select(room_memberships)
                .where(
                    room_memberships.c.room_id.in_(room_ids[start : start + 500]),
                    room_memberships.c.membership.in_(memberships),
                )
                .order_by(room_memberships.c.room_id, room_memberships.c.user_id)
            )
            async with self.db.read() as conn:
                for row in await conn.execute(query):
                    member = _membership(row)
                    found[member.room_id].append(member)
        return found

    async def last_positions(self, room_ids: list[str]) -> dict[str, int]:
        """The newest event's stream position of each room."""
        found: dict[str, int] = {r: 0 for r in room_ids}
        for start in range(0, len(room_ids), 500):
            query = (
                select(events.c.room_id, func.max(events.c.stream_ordering))
                .where(events.c.room_id.in_(room_ids[start : start + 500]))
                .group_by(events.c.room_id)
            )
            async with self.db.read() as conn:
                found.update({row[0]: int(row[1]) for row in await conn.execute(query)})
        return found

    async def last_membership_positions(self, room_ids: list[str]) -> dict[str, int]:
        """The newest membership change's stream position of each room."""
        found: dict[str, int] = {r: 0 for r in room_ids}
        for start in range(0, len(room_ids), 500):
            query = (
                select(room_memberships.c.room_id, func.max(room_memberships.c.stream_ordering))
                .where(room_memberships.c.room_id.in_(room_ids[start : start + 500]))
                .group_by(room_memberships.c.room_id)
            )
            async with self.db.read() as conn:
                found.update({row[0]: int(row[1]) for row in await conn.execute(query)})
        return found
