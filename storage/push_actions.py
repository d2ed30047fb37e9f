"""What push rules decided per (user, event), and what of it is still unread.

`event_push_recipients` keeps every decision, a row per event for all its recipients
(appended in stream order);
`event_push_summary` keeps the unread counts per (user, room, thread), maintained by
the writers: +1 per notification, zeroed by the user's own event, recounted from the
actions after the read mark when a receipt moves it.

A user has read an event in a room when its position is at or before any of:
their unthreaded read receipt (`m.read` or `m.read.private`, whichever points later),
their threaded receipt for the event's thread (`main` for the main timeline), or
their own newest event in the room (sending reads everything before it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from sqlalchemy import bindparam, delete, func, insert, select, update

from storage.database import Connection, Database
from storage.events import json_text
from storage.schema import (
    account_data,
    event_push_recipients,
    event_push_summary,
    events,
    push_own_events,
    receipts,
)

READ_RECEIPT_TYPES = ("m.read", "m.read.private")
MAIN_THREAD = "main"


# A message makes one per recipient.
class ActionRow(msgspec.Struct):
    user_id: str
    room_id: str
    stream_ordering: int
    event_id: str
    thread_id: str
    actions: list[Any]
    notify: bool
    highlight: bool
    ts: int


class ReadMarks(msgspec.Struct):
    """One user's read positions in one room."""

    unthreaded: int = 0
    threads: dict[str, int] = msgspec.field(default_factory=dict)

    def read_upto(self, thread_id: str) -> int:
        return max(self.unthreaded, self.threads.get(thread_id, 0))

    def is_read(self, stream_ordering: int, thread_id: str) -> bool:
        return stream_ordering <= self.read_upto(thread_id)


class Counts(msgspec.Struct, frozen=True):
    notifications: int
    highlights: int


_RECIPIENT_COLUMNS = ("stream_ordering", "room_id", "event_id", "thread_id", "ts", "recipients")
# Built once and run through `Database.run` (no per-call SQLAlchemy work).
_INSERT_RECIPIENTS = insert(event_push_recipients).values({c: bindparam(c) for c in _RECIPIENT_COLUMNS})
# Deactivation: a row without the user, or no row when they were its only recipient.
_SET_RECIPIENTS = (
    update(event_push_recipients)
    .where(event_push_recipients.c.stream_ordering == bindparam("at"))
    .values(recipients=bindparam("recipients"))
)
_DELETE_RECIPIENTS = delete(event_push_recipients).where(event_push_recipients.c.stream_ordering == bindparam("at"))
_ZERO_COUNTS = (
    update(event_push_summary)
    .where(
        event_push_summary.c.user_id == bindparam("u"),
        event_push_summary.c.room_id == bindparam("r"),
        # Counts already zero stay untouched: an UPDATE writes its rows' pages even
        # when nothing changes, and a chatty user's every message would.
        (event_push_summary.c.notifications != 0) | (event_push_summary.c.highlights != 0),
    )
    .values(notifications=0, highlights=0)
)
_count_statements: dict[str, Any] = {}

# /notifications, a pusher's catch-up and deactivation look at this many stream
# positions per query at most. A user's rows are found by their JSON key, which no
# index holds (one by user cost four times the rows themselves when they were a row
# per recipient): unbounded, the query for a user with few notifications read the
# whole table, for seconds, on the event loop's thread.
SCAN_POSITIONS = 2000


def _recipient_key(user_id: str) -> str:
    """How the user's entry starts in `recipients`: their JSON-encoded ID and a colon.
    A match is confirmed by parsing (LIKE is case-insensitive on SQLite)."""
    return json_text(user_id) + ":"


def _mentioning(user_id: str) -> Any:
    return event_push_recipients.c.recipients.contains(_recipient_key(user_id), autoescape=True)


def _in_window(user_id: str, lowest: int, below: int) -> Any:
    """The rows at positions in [lowest, below) that may have the user among their
    recipients."""
    return select(event_push_recipients).where(
        event_push_recipients.c.stream_ordering >= lowest,
        event_push_recipients.c.stream_ordering < below,
        _mentioning(user_id),
    )


def _rows_of(user_id: str, rows: Iterable[Any], *, only_highlight: bool = False) -> Iterator[ActionRow]:
    """The user's notifying actions among `rows` of event_push_recipients."""
    for row in rows:
        entry = json.loads(row.recipients).get(user_id)
        if entry is None:
            continue
        notify, highlight, actions = entry
        if not notify or (only_highlight and not highlight):
            continue
        yield ActionRow(
            user_id,
            row.room_id,
            int(row.stream_ordering),
            row.event_id,
            row.thread_id,
            actions,
            True,
            bool(highlight),
            int(row.ts),
        )


def _count_notification(dialect: str) -> Any:
    """+1 notification (and +highlight) for (user, room, thread), creating the row."""
    statement = _count_statements.get(dialect)
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        base = dialect_insert(event_push_summary).values(
            user_id=bindparam("user_id"),
            room_id=bindparam("room_id"),
            thread_id=bindparam("thread_id"),
            notifications=1,
            highlights=bindparam("highlights"),
        )
        statement = _count_statements[dialect] = base.on_conflict_do_update(
            index_elements=["user_id", "room_id", "thread_id"],
            set_={
                "notifications": event_push_summary.c.notifications + 1,
                "highlights": event_push_summary.c.highlights + base.excluded.highlights,
            },
        )
    return statement


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, rows: list[ActionRow], own: tuple[str, str, int] | None) -> None:
        """The actions of one event for all its recipients (`rows`, one per
        recipient), their unread counts, and (for a local sender) the sender's
        own-event mark, in one transaction."""
        if not rows and own is None:
            return
        db = self.db
        async with db.write_prebuilt() as conn:
            if rows:
                first = rows[0]
                recipients = {r.user_id: [int(r.notify), int(r.highlight), r.actions] for r in rows}
                await db.run(
                    conn,
                    _INSERT_RECIPIENTS,
                    {
                        "stream_ordering": first.stream_ordering,
                        "room_id": first.room_id,
                        "event_id": first.event_id,
                        "thread_id": first.thread_id,
                        "ts": first.ts,
                        "recipients": json_text(recipients),
                    },
                )
                counted = [
                    {"user_id": r.user_id, "room_id": r.room_id, "thread_id": r.thread_id, "highlights": int(r.highlight)}
                    for r in rows
                    if r.notify
                ]
                if counted:
                    await db.run(conn, _count_notification(db.dialect), counted)
            if own is not None:
                user_id, room_id, position = own
                columns = ("user_id", "room_id", "stream_ordering")
                own_upsert = db.upsert_statement(push_own_events, columns, ("user_id", "room_id"))
                await db.run(conn, own_upsert, {"user_id": user_id, "room_id": room_id, "stream_ordering": position})
                # Sending reads everything before it, in every thread.
                await db.run(conn, _ZERO_COUNTS, {"u": user_id, "r": room_id})

    async def recount(self, user_id: str, room_id: str, thread_id: str) -> None:
        """A read receipt of the user moved (unthreaded: thread_id ''): count the
        affected threads afresh from their read marks. Only actions after the new
        mark are read, which is normally just a few."""
        async with self.db.write() as conn:
            marks = (await self._read_marks(conn, user_id, room_id)).get(room_id, ReadMarks())
            start = marks.unthreaded if thread_id == "" else marks.read_upto(thread_id)
            t = event_push_recipients.c
            # Driven by the room's events (their (room_id, stream_ordering) index), each
            # a primary-key lookup: a user back after months reads that room's rows
            # since, not every room's.
            query = (
                select(event_push_recipients)
                .select_from(events.join(event_push_recipients, t.stream_ordering == events.c.stream_ordering))
                .where(events.c.room_id == room_id, events.c.stream_ordering > start, _mentioning(user_id))
            )
            if thread_id:
                query = query.where(t.thread_id == thread_id)
            counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for row in _rows_of(user_id, await conn.execute(query)):
                if not marks.is_read(row.stream_ordering, row.thread_id):
                    counts[row.thread_id][0] += 1
                    counts[row.thread_id][1] += 1 if row.highlight else 0
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

    async def _read_marks(self, conn: Connection, user_id: str, room_id: str | None) -> dict[str, ReadMarks]:
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
        self, user_id: str, before: int, limit: int, only_highlight: bool
    ) -> tuple[list[tuple[ActionRow, bool]], int]:
        """Notify actions newest first, each with whether the user has read it, among
        the positions in [before - SCAN_POSITIONS, before) only; with the window's
        lowest position, where the next page starts when this one is not full."""
        lowest = max(0, before - SCAN_POSITIONS)
        query = _in_window(user_id, lowest, before).order_by(event_push_recipients.c.stream_ordering.desc())
        async with self.db.read() as conn:
            found = _rows_of(user_id, await conn.execute(query), only_highlight=only_highlight)
            rows = list(itertools.islice(found, limit))
            marks = await self._read_marks(conn, user_id, None) if rows else {}
        return [(r, marks.get(r.room_id, ReadMarks()).is_read(r.stream_ordering, r.thread_id)) for r in rows], lowest

    async def pending(self, user_id: str, after: int, upto: int, limit: int) -> list[ActionRow]:
        """Notify actions of a user in the positions (after, upto], oldest first (a
        pusher's delivery), from the first window of SCAN_POSITIONS that has any."""
        while after < upto:
            window_end = min(upto, after + SCAN_POSITIONS)
            query = _in_window(user_id, after + 1, window_end + 1).order_by(event_push_recipients.c.stream_ordering)
            async with self.db.read() as conn:
                rows = list(itertools.islice(_rows_of(user_id, await conn.execute(query)), limit))
            if rows:
                return rows
            after = window_end
            await asyncio.sleep(0)  # a long way behind: let the server go on meanwhile
        return []

    async def delete_user(self, user_id: str, upto: int) -> None:
        """Every push action of a user (deactivated): their entry leaves each row
        (a row left with no recipients goes), a window of positions per transaction
        (see SCAN_POSITIONS)."""
        lowest = 0
        while lowest <= upto:
            query = _in_window(user_id, lowest, min(lowest + SCAN_POSITIONS, upto + 1))
            async with self.db.write() as conn:
                kept: list[dict[str, Any]] = []
                emptied: list[dict[str, Any]] = []
                for row in (await conn.execute(query)).all():
                    recipients = json.loads(row.recipients)
                    if recipients.pop(user_id, None) is None:
                        continue
                    if recipients:
                        kept.append({"at": row.stream_ordering, "recipients": json_text(recipients)})
                    else:
                        emptied.append({"at": row.stream_ordering})
                # Prebuilt, each run once for the window's rows: a statement built per
                # row cost SQLAlchemy's statement handling each time.
                if kept:
                    await self.db.run(conn, _SET_RECIPIENTS, kept)
                if emptied:
                    await self.db.run(conn, _DELETE_RECIPIENTS, emptied)
            lowest += SCAN_POSITIONS
            await asyncio.sleep(0)

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
