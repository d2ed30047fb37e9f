"""Room aliases (#name:server -> room ID)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.schema import room_aliases


class AliasStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, alias: str, room_id: str, creator: str) -> bool:
        """False when the alias is taken."""
        try:
            async with self.db.write() as conn:
                await conn.execute(insert(room_aliases).values(alias=alias, room_id=room_id, creator=creator))
        except IntegrityError:
            return False
        return True

    async def get(self, alias: str) -> tuple[str, str] | None:
        """(room_id, creator) of an alias."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(room_aliases.c.room_id, room_aliases.c.creator).where(room_aliases.c.alias == alias)
                )
            ).first()
        return (row.room_id, row.creator) if row else None

    async def delete(self, alias: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(room_aliases).where(room_aliases.c.alias == alias))

    async def aliases_of(self, room_id: str) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(room_aliases.c.alias).where(room_aliases.c.room_id == room_id).order_by(room_aliases.c.alias)
            )
            return [row.alias for row in rows]
