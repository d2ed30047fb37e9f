"""Rooms and who is in them: the membership table derived from member state events."""

from __future__ import annotations

import msgspec
from sqlalchemy import func, select, update

from storage.database import Database
from storage.schema import room_memberships, rooms


class Membership(msgspec.Struct, frozen=True):
    room_id: str
    user_id: str
    membership: str
    event_id: str
    stream_ordering: int
    sender: str
    forgotten: bool


class RoomInfo(msgspec.Struct, frozen=True):
    room_id: str
    room_version: str
    creator: str | None
    is_public: bool


def _membership(row: object) -> Membership:
    return Membership(**row._mapping)  # type: ignore[attr-defined]


class RoomStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_room(self, room_id: str) -> RoomInfo | None:
        query = select(rooms.c.room_id, rooms.c.room_version, rooms.c.creator, rooms.c.is_public).where(
            rooms.c.room_id == room_id
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return RoomInfo(row.room_id, row.room_version, row.creator, bool(row.is_public)) if row else None

    async def set_public(self, room_id: str, is_public: bool) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(rooms).where(rooms.c.room_id == room_id).values(is_public=is_public))

    async def public_room_ids(self) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(rooms.c.room_id).where(rooms.c.is_public.is_(True)))
            return [row.room_id for row in rows]

    async def get_membership(self, room_id: str, user_id: str) -> Membership | None:
        query = select(room_memberships).where(
            room_memberships.c.room_id == room_id, room_memberships.c.user_id == user_id
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return _membership(row) if row else None

    async def rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[Membership]:
        query = select(room_memberships).where(
            room_memberships.c.user_id == user_id, room_memberships.c.membership.in_(memberships)
        )
        async with self.db.read() as conn:
            return [_membership(row) for row in await conn.execute(query)]

    async def members(self, room_id: str, memberships: tuple[str, ...] | None = None) -> list[Membership]:
        query = select(room_memberships).where(room_memberships.c.room_id == room_id)
        if memberships is not None:
            query = query.where(room_memberships.c.membership.in_(memberships))
        async with self.db.read() as conn:
            return [_membership(row) for row in await conn.execute(query.order_by(room_memberships.c.user_id))]

    async def joined_member_counts(self, room_ids: list[str]) -> dict[str, int]:
        if not room_ids:
            return {}
        query = (
            select(room_memberships.c.room_id, func.count())
            .where(room_memberships.c.room_id.in_(room_ids), room_memberships.c.membership == "join")
            .group_by(room_memberships.c.room_id)
        )
        async with self.db.read() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def forget(self, room_id: str, user_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(room_memberships)
                .where(room_memberships.c.room_id == room_id, room_memberships.c.user_id == user_id)
                .values(forgotten=True)
            )

    async def share_a_room(self, user_a: str, user_b: str) -> bool:
        a = room_memberships.alias("a")
        b = room_memberships.alias("b")
        query = (
            select(a.c.room_id)
            .join(b, b.c.room_id == a.c.room_id)
            .where(a.c.user_id == user_a, b.c.user_id == user_b, a.c.membership == "join", b.c.membership == "join")
            .limit(1)
        )
        async with self.db.read() as conn:
            return (await conn.execute(query)).first() is not None
