"""Pushers: where a user's notifications are delivered, one per (user, app_id, pushkey)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from sqlalchemy import and_, delete, func, select, update

from storage.database import Database
from storage.schema import events, pushers


class Pusher(msgspec.Struct, frozen=True):
    user_id: str
    app_id: str
    pushkey: str
    device_id: str | None
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    pushkey_ts: int
    last_stream_ordering: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user_id, self.app_id, self.pushkey)


def _pusher(row: Any) -> Pusher:
    return Pusher(
        row.user_id,
        row.app_id,
        row.pushkey,
        row.device_id,
        row.kind,
        row.app_display_name,
        row.device_display_name,
        row.profile_tag,
        row.lang,
        json.loads(row.data),
        int(row.pushkey_ts),
        int(row.last_stream_ordering),
    )


def _key(user_id: str, app_id: str, pushkey: str) -> Any:
    return and_(pushers.c.user_id == user_id, pushers.c.app_id == app_id, pushers.c.pushkey == pushkey)


class PusherStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Pusher]:
        async with self.db.read() as conn:
            return [_pusher(r) for r in await conn.execute(select(pushers))]

    async def for_user(self, user_id: str) -> list[Pusher]:
        query = select(pushers).where(pushers.c.user_id == user_id).order_by(pushers.c.app_id, pushers.c.pushkey)
        async with self.db.read() as conn:
            return [_pusher(r) for r in await conn.execute(query)]

    async def get(self, user_id: str, app_id: str, pushkey: str) -> Pusher | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(pushers).where(_key(user_id, app_id, pushkey)))).first()
        return _pusher(row) if row else None

    async def set(self, pusher: Pusher, *, append: bool) -> tuple[Pusher, list[Pusher]]:
        """Create or replace; unless `append`, other users' pushers with the same
        app_id and pushkey go. Returns (the stored pusher, the removed ones).

        A new pusher starts at the newest event: it delivers what comes after it.
        An updated one keeps its delivery position."""
        async with self.db.write() as conn:
            removed: list[Pusher] = []
            if not append:
                others = and_(
                    pushers.c.app_id == pusher.app_id,
                    pushers.c.pushkey == pusher.pushkey,
                    pushers.c.user_id != pusher.user_id,
                )
                removed = [_pusher(r) for r in await conn.execute(select(pushers).where(others))]
                await conn.execute(delete(pushers).where(others))
            key = _key(pusher.user_id, pusher.app_id, pusher.pushkey)
            existing = (await conn.execute(select(pushers.c.last_stream_ordering).where(key))).first()
            if existing is not None:
                position = int(existing[0])
                await conn.execute(delete(pushers).where(key))
            else:
                position = int((await conn.execute(select(func.max(events.c.stream_ordering)))).scalar() or 0)
            values = {
                "user_id": pusher.user_id,
                "app_id": pusher.app_id,
                "pushkey": pusher.pushkey,
                "device_id": pusher.device_id,
                "kind": pusher.kind,
                "app_display_name": pusher.app_display_name,
                "device_display_name": pusher.device_display_name,
                "profile_tag": pusher.profile_tag,
                "lang": pusher.lang,
                "data": json.dumps(pusher.data),
                "pushkey_ts": pusher.pushkey_ts,
                "last_stream_ordering": position,
            }
            await conn.execute(pushers.insert().values(**values))
            row = (await conn.execute(select(pushers).where(key))).first()
        return _pusher(row), removed

    async def delete(self, user_id: str, app_id: str, pushkey: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(delete(pushers).where(_key(user_id, app_id, pushkey)))
        return bool(result.rowcount)

    async def delete_for_devices(self, user_id: str, device_ids: list[str]) -> list[Pusher]:
        query = select(pushers).where(pushers.c.user_id == user_id, pushers.c.device_id.in_(device_ids))
        async with self.db.write() as conn:
            gone = [_pusher(r) for r in await conn.execute(query)]
            await conn.execute(delete(pushers).where(pushers.c.user_id == user_id, pushers.c.device_id.in_(device_ids)))
        return gone

    async def delete_for_user(self, user_id: str) -> list[Pusher]:
        async with self.db.write() as conn:
            gone = [_pusher(r) for r in await conn.execute(select(pushers).where(pushers.c.user_id == user_id))]
            await conn.execute(delete(pushers).where(pushers.c.user_id == user_id))
        return gone

    async def set_position(self, user_id: str, app_id: str, pushkey: str, position: int) -> None:
        """Record delivery up to `position` (never moves back)."""
        async with self.db.write() as conn:
            await conn.execute(
                update(pushers)
                .where(_key(user_id, app_id, pushkey), pushers.c.last_stream_ordering < position)
                .values(last_stream_ordering=position)
            )
