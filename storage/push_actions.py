"""What push rules decided per (user, event), and what of it is still unread.

`event_push_actions` keeps every decision (appended in stream order);
`event_push_summary` keeps the unread counts per (user, room, thread), maintained by
the writers: +1 per notification, zeroed by the user's own event, recounted from the
actions after the read mark when a receipt moves it.

A user has read an event in a room when its position is at or before any of:
their unthreaded read receipt (`m.read` or `m.read.private`, whichever points later),
their threaded receipt for the event's thread (`main` for the main timeline), or
their own newest event in the room (sending reads everything before it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database, upsert
from storage.schema import (
    account_data,
    event_push_actions,
    event_push_summary,
    events,
    push_own_events,
    receipts,
)

READ_RECEIPT_TYPES = ("m.read", "m.read.private")
MAIN_THREAD = "main"


@dataclass(frozen=True)
class ActionRow:
    user_id: str
    room_id: str
    stream_ordering: int
    event_id: str
    thread_id: str
    actions: list[Any]
    notify: bool
    highlight: bool
    ts: int


@dataclass
class ReadMarks:
    """One user's read positions in one room."""

    unthreaded: int = 0
    threads: dict[str, int] = field(default_factory=dict)

    def read_upto(self, thread_id: str) -> int:
        return max(self.unthreaded, self.threads.get(thread_id, 0))

    def is_read(self, stream_ordering: int, thread_id: str) -> bool:
        return stream_ordering <= self.read_upto(thread_id)


@dataclass(frozen=True)
class Counts:
    notifications: int
    highlights: int


def _row(row: Any) -> ActionRow:
    return ActionRow(
        row.user_id,
        row.room_id,
        int(row.stream_ordering),
        row.event_id,
        row.thread_id,
        json.loads(row.actions),
        bool(row.notify),
        bool(row.highlight),
        int(row.ts),
    )


_INSERT_ACTIONS = (
    "INSERT INTO event_push_actions (stream_ordering, user_id, room_id, event_id, thread_id, actions, notify,"
    " highlight, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COUNT_NOTIFICATION = (
    "INSERT INTO event_push_summary (user_id, room_id, thread_id, notifications, highlights) VALUES (?, ?, ?, 1, ?)"
    " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET"
    " notifications = event_push_summary.notifications + 1,"
    " highlights = event_push_summary.highlights + excluded.highlights"
)


def _placeholders(conn: AsyncConnection, sql: str) -> str:
    """`sql` written with `?` placeholders, in the driver's parameter style."""
    style = conn.dialect.paramstyle
    if style == "qmark":
        return sql
    parts = sql.split("?")
    if style == "numeric_dollar":
        return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1))
    if style == "format":
        return "%s".join(parts)
    raise RuntimeError(f"unsupported parameter style {style}")


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, rows: list[ActionRow], own: tuple[str, str, int] | None) -> None:
        """The actions of one event for all its recipients, their unread counts, and
        (for a local sender) the sender's own-event mark, in one transaction."""
        if not rows and own is None:
            return
        async with self.db.write() as conn:
            if rows:
                # A message in a big room has a row per member: executemany at the
                # driver level, without SQLAlchemy's per-row parameter processing
                # (several times the cost of the inserts themselves).
                encoded: dict[int, str] = {}  # the evaluator shares action lists
                await conn.exec_driver_sql(
                    _placeholders(conn, _INSERT_ACTIONS),
                    [
                        (
                            r.stream_ordering,
                            r.user_id,
                            r.room_id,
                            r.event_id,
                            r.thread_id,
                            encoded.get(id(r.actions)) or encoded.setdefault(id(r.actions), json.dumps(r.actions)),
                            r.notify,
                            r.highlight,
                            r.ts,
                        )
                        for r in rows
                    ],
                )
                counted = [(r.user_id, r.room_id, r.thread_id, 1 if r.highlight else 0) for r in rows if r.notify]
                if counted:
                    await conn.exec_driver_sql(_placeholders(conn, _COUNT_NOTIFICATION), counted)
            if own is not None:
                user_id, room_id, position = own
                await upsert(
                    conn,
                    push_own_events,
                    {"user_id": user_id, "room_id": room_id, "stream_ordering": position},
                    ["user_id", "room_id"],
                )
                # Sending reads everything before it, in every thread.
                await conn.execute(
                    update(event_push_summary)
                    .where(event_push_summary.c.user_id == user_id, event_push_summary.c.room_id == room_id)
                    .values(notifications=0, highlights=0)
                )

    async def recount(self, user_id: str, room_id: str, thread_id: str) -> None:
        """A read receipt of the user moved (unthreaded: thread_id ''): count the
        affected threads afresh from their read marks. Only actions after the new
        mark are read, which is normally just a few."""
        async with self.db.write() as conn:
            marks = (await self._read_marks(conn, user_id, room_id)).get(room_id, ReadMarks())
            start = marks.unthreaded if thread_id == "" else marks.read_upto(thread_id)
            query = select(
                event_push_actions.c.thread_id, event_push_actions.c.stream_ordering, event_push_actions.c.highlight
            ).where(
                event_push_actions.c.stream_ordering > start,
                event_push_actions.c.user_id == user_id,
                event_push_actions.c.room_id == room_id,
                event_push_actions.c.notify.is_(True),
            )
            if thread_id:
                query = query.where(event_push_actions.c.thread_id == thread_id)
            counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for thread, position, highlight in await conn.execute(query):
                if int(position) > marks.read_upto(thread):
                    counts[thread][0] += 1
                    counts[thread][1] += 1 if highlight else 0
            mine = (event_push_summary.c.user_id == user_id, event_push_summary.c.room_id == room_id)
            if thread_id:
                await conn.execute(delete(event_push_summary).where(*mine, event_push_summary.c.thread_id == thread_id))
            else:
                await conn.execute(delete(event_push_summary).where(*mine))
            if counts:
                await conn.execute(
                    insert(event_push_summary),
                    [
                        {"user_id": user_id, "room_id": room_id, "thread_id": t, "notifications": n, "highlights": h}
                        for t, (n, h) in counts.items()
                    ],
                )

    async def _read_marks(self, conn: AsyncConnection, user_id: str, room_id: str | None) -> dict[str, ReadMarks]:
        marks: dict[str, ReadMarks] = defaultdict(ReadMarks)
        query = (
            select(receipts.c.room_id, receipts.c.thread_id, func.max(events.c.stream_ordering))
            .select_from(receipts.join(events, events.c.event_id == receipts.c.event_id))
            .where(receipts.c.user_id == user_id, receipts.c.receipt_type.in_(READ_RECEIPT_TYPES))
            .group_by(receipts.c.room_id, receipts.c.thread_id)
        )
        own = select(push_own_events.c.room_id, push_own_events.c.stream_ordering).where(
            push_own_events.c.user_id == user_id
        )
        if room_id is not None:
            query = query.where(receipts.c.room_id == room_id)
            own = own.where(push_own_events.c.room_id == room_id)
        for room, thread, position in await conn.execute(query):
            if position is None:
                continue
            if thread == "":
                marks[room].unthreaded = max(marks[room].unthreaded, int(position))
            else:
                marks[room].threads[thread] = int(position)
        for room, position in await conn.execute(own):
            marks[room].unthreaded = max(marks[room].unthreaded, int(position))
        return marks

    async def read_marks(self, user_id: str, room_id: str | None = None) -> dict[str, ReadMarks]:
        async with self.db.read() as conn:
            return await self._read_marks(conn, user_id, room_id)

    async def unread_counts(self, user_id: str, room_id: str) -> dict[str, Counts]:
        """Unread notification and highlight counts per thread ('main' included)."""
        query = select(
            event_push_summary.c.thread_id, event_push_summary.c.notifications, event_push_summary.c.highlights
        ).where(event_push_summary.c.user_id == user_id, event_push_summary.c.room_id == room_id)
        async with self.db.read() as conn:
            return {
                thread: Counts(int(n), int(h)) for thread, n, h in await conn.execute(query) if n or h
            }

    async def badge_count(self, user_id: str) -> int:
        """Unread notifications across all rooms (the push badge)."""
        query = select(func.sum(event_push_summary.c.notifications)).where(event_push_summary.c.user_id == user_id)
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[tuple[ActionRow, bool]]:
        """Notify actions newest first, each with whether the user has read it."""
        query = select(event_push_actions).where(
            event_push_actions.c.user_id == user_id, event_push_actions.c.notify.is_(True)
        )
        if before is not None:
            query = query.where(event_push_actions.c.stream_ordering < before)
        if only_highlight:
            query = query.where(event_push_actions.c.highlight.is_(True))
        query = query.order_by(event_push_actions.c.stream_ordering.desc()).limit(limit)
        async with self.db.read() as conn:
            rows = [_row(r) for r in await conn.execute(query)]
            marks = await self._read_marks(conn, user_id, None) if rows else {}
        return [(r, marks.get(r.room_id, ReadMarks()).is_read(r.stream_ordering, r.thread_id)) for r in rows]

    async def pending(self, user_id: str, after: int, limit: int) -> list[ActionRow]:
        """Notify actions of a user after a position, oldest first (pusher delivery)."""
        query = (
            select(event_push_actions)
            .where(
                event_push_actions.c.user_id == user_id,
                event_push_actions.c.notify.is_(True),
                event_push_actions.c.stream_ordering > after,
            )
            .order_by(event_push_actions.c.stream_ordering)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def ignored_users(self, user_ids: list[str]) -> dict[str, frozenset[str]]:
        """Each user's m.ignored_user_list, for many users in a few queries."""
        found: dict[str, frozenset[str]] = {u: frozenset() for u in user_ids}
        for start in range(0, len(user_ids), 500):
            query = select(account_data.c.user_id, account_data.c.content).where(
                account_data.c.user_id.in_(user_ids[start : start + 500]),
                account_data.c.room_id == "",
                account_data.c.type == "m.ignored_user_list",
            )
            async with self.db.read() as conn:
                for user_id, content in await conn.execute(query):
                    try:
                        ignored = json.loads(content).get("ignored_users")
                    except (ValueError, AttributeError):
                        ignored = None
                    found[user_id] = frozenset(ignored) if isinstance(ignored, dict) else frozenset()
        return found
