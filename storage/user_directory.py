"""The user directory, read from the live tables (users, room_memberships,
current_state): nothing to keep in step when profiles or memberships change."""

from __future__ import annotations

import json

import msgspec
from sqlalchemy import func, or_, select

from storage.database import Database
from storage.schema import current_state, events, room_memberships, users


class DirectoryEntry(msgspec.Struct, frozen=True):
    user_id: str
    displayname: str | None
    avatar_url: str | None
    shares_room: bool


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def public_room_ids(self) -> list[str]:
        """Rooms whose current join rule is public."""
        query = (
            select(current_state.c.room_id, events.c.json)
            .join(events, events.c.event_id == current_state.c.event_id)
            .where(current_state.c.type == "m.room.join_rules", current_state.c.state_key == "")
        )
        async with self.db.read() as conn:
            rows = list(await conn.execute(query))
        public = []
        for row in rows:
            content = json.loads(row.json).get("content")
            if isinstance(content, dict) and content.get("join_rule") == "public":
                public.append(row.room_id)
        return public

    async def candidates(
        self, searcher: str, first_word: str, *, search_all: bool, exclude: set[str]
    ) -> list[DirectoryEntry]:
        """Active local users visible to `searcher` whose ID or display name contains
        `first_word` (the caller applies the exact word-prefix match)."""
        mine = room_memberships.alias("mine")
        theirs = room_memberships.alias("theirs")
        shared = (
            select(theirs.c.user_id)
            .join(mine, mine.c.room_id == theirs.c.room_id)
            .where(mine.c.user_id == searcher, mine.c.membership == "join", theirs.c.membership == "join")
        )
        pattern = f"%{_like_escape(first_word.lower())}%"
        conditions = [
            users.c.deactivated.is_(False),
            or_(
                func.lower(users.c.user_id).like(pattern, escape="\\"),
                func.lower(users.c.displayname).like(pattern, escape="\\"),
            ),
        ]
        if exclude:
            conditions.append(users.c.user_id.not_in(list(exclude)))
        if not search_all:
            public_rooms = await self.public_room_ids()
            in_public = select(room_memberships.c.user_id).where(
                room_memberships.c.room_id.in_(public_rooms), room_memberships.c.membership == "join"
            )
            conditions.append(or_(users.c.user_id.in_(shared), users.c.user_id.in_(in_public)))
        query = select(users.c.user_id, users.c.displayname, users.c.avatar_url).where(*conditions)
        async with self.db.read() as conn:
            shared_ids = {row.user_id for row in await conn.execute(shared)}
            return [
                DirectoryEntry(row.user_id, row.displayname, row.avatar_url, row.user_id in shared_ids)
                for row in await conn.execute(query)
            ]
