"""The outgoing federation queue: which events each destination has yet to receive.

Rows are written when an event is persisted and deleted when the destination
acknowledges the transaction carrying it, so a restart resumes where it stopped.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from storage.database import Database, upsert
from storage.schema import federation_outbox


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, destinations: list[str], event_id: str, stream_ordering: int) -> None:
        async with self.db.write() as conn:
            for destination in destinations:
                await upsert(
                    conn,
                    federation_outbox,
                    {"destination": destination, "event_id": event_id, "stream_ordering": stream_ordering},
                    ["destination", "event_id"],
                )

    async def pending(self, destination: str, limit: int) -> list[str]:
        query = (
            select(federation_outbox.c.event_id)
            .where(federation_outbox.c.destination == destination)
            .order_by(federation_outbox.c.stream_ordering)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [row.event_id for row in await conn.execute(query)]

    async def remove(self, destination: str, event_ids: list[str]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                delete(federation_outbox).where(
                    federation_outbox.c.destination == destination, federation_outbox.c.event_id.in_(event_ids)
                )
            )

    async def destinations(self) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(federation_outbox.c.destination).distinct())
            return [row.destination for row in rows]
