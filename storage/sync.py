"""Read queries the /sync builder needs over rooms, events and memberships."""

from __future__ import annotations

from typing import Any

from collections.abc import Iterable

from sqlalchemy import func, select

from storage.database import Database
from storage.rooms import Membership, _membership
from storage.schema import events, receipts, room_memberships

# Events counted as unread (until push rules exist).
UNREAD_TYPES = ("m.room.message", "m.room.encrypted", "m.sticker")
UNREAD_CAP = 1000



def _unread_conditions(room_id: str, user_id: str, upto: int) -> list[Any]:
    """What counts as unread (until push rules decide): another user's accepted,
    unredacted message in the room, up to `upto`."""
    return [
        events.c.room_id == room_id,
        events.c.stream_ordering <= upto,
        events.c.sender != user_id,
        events.c.state_key.is_(None),
        events.c.type.in_(UNREAD_TYPES),
        events.c.redacted_by.is_(None),
        events.c.outlier.is_(False),
        events.c.rejected_reason.is_(None),
    ]

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

    async def joined_room_ids(self, user_id: str) -> list[str]:
        query = select(room_memberships.c.room_id).where(
            room_memberships.c.user_id == user_id, room_memberships.c.membership == "join"
        )
        async with self.db.read() as conn:
            return [row[0] for row in await conn.execute(query)]

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

    async def _count(self, inner: Any) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(inner))).scalar() or 0)

    async def unread_count(self, room_id: str, user_id: str, after: int, upto: int) -> int:
        inner = (
            select(events.c.stream_ordering)
            .where(events.c.stream_ordering > after, *_unread_conditions(room_id, user_id, upto))
            .limit(UNREAD_CAP)
            .subquery()
        )
        return await self._count(inner)

    async def last_own_event(self, room_id: str, user_id: str, upto: int) -> int | None:
        query = select(func.max(events.c.stream_ordering)).where(
            events.c.room_id == room_id, events.c.sender == user_id, events.c.stream_ordering <= upto
        )
        async with self.db.read() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value) if value is not None else None

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

    async def unread_after_receipt(self, room_id: str, user_id: str, upto: int) -> int:
        """Messages from others after the user's read receipt (or their own newest
        event, which reads everything before it), capped at UNREAD_CAP; one query."""
        read = (
            select(func.max(events.c.stream_ordering))
            .select_from(receipts.join(events, events.c.event_id == receipts.c.event_id))
            .where(
                receipts.c.room_id == room_id,
                receipts.c.user_id == user_id,
                receipts.c.receipt_type.in_(("m.read", "m.read.private")),
            )
            .scalar_subquery()
        )
        own = (
            select(func.max(events.c.stream_ordering))
            .where(events.c.room_id == room_id, events.c.sender == user_id, events.c.stream_ordering <= upto)
            .scalar_subquery()
        )
        inner = (
            select(events.c.stream_ordering)
            .where(
                events.c.stream_ordering > func.coalesce(read, 0),
                events.c.stream_ordering > func.coalesce(own, 0),
                *_unread_conditions(room_id, user_id, upto),
            )
            .limit(UNREAD_CAP)
            .subquery()
        )
        return await self._count(inner)
