"""Reports of events by users, for the server's admins."""

from __future__ import annotations

from sqlalchemy import insert

from storage.database import Database
from storage.schema import event_reports


class ReportStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, room_id: str, event_id: str, user_id: str, reason: str | None, score: int | None, now_ms: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(event_reports).values(
                    room_id=room_id, event_id=event_id, user_id=user_id, reason=reason, score=score, received_ts=now_ms
                )
            )
