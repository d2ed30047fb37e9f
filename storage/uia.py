"""User-interactive authentication sessions: which stages a session has completed."""

from __future__ import annotations

import json

import msgspec
from sqlalchemy import delete, insert, select, update

from storage.database import Database
from storage.schema import uia_sessions


class UiaSession(msgspec.Struct, frozen=True):
    session_id: str
    created_ts: int
    user_id: str | None
    completed: list[str]
    request_summary: str


class UiaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, session_id: str, now_ms: int, user_id: str | None, request_summary: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(uia_sessions).values(
                    session_id=session_id,
                    created_ts=now_ms,
                    user_id=user_id,
                    completed="[]",
                    request_summary=request_summary,
                )
            )

    async def get(self, session_id: str) -> UiaSession | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(uia_sessions).where(uia_sessions.c.session_id == session_id))
            ).first()
        if row is None:
            return None
        return UiaSession(
            session_id=row.session_id,
            created_ts=row.created_ts,
            user_id=row.user_id,
            completed=json.loads(row.completed),
            request_summary=row.request_summary,
        )

    async def set_completed(self, session_id: str, completed: list[str]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(uia_sessions)
                .where(uia_sessions.c.session_id == session_id)
                .values(completed=json.dumps(completed))
            )

    async def delete(self, session_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(uia_sessions).where(uia_sessions.c.session_id == session_id))

    async def delete_older_than(self, cutoff_ms: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(uia_sessions).where(uia_sessions.c.created_ts < cutoff_ms))
