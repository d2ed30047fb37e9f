"""Presence (spec: "Presence"): online while a client syncs or acts, unavailable after
5 minutes without activity, offline once 30 seconds have passed with no sync under way
and none ended, no event sent and no presence set (a client that only sets presence
or sends events, like a bot, stays as it said while it keeps doing so).

Explicit changes (PUT /presence) and syncing write the `presence` stream; a sweep every
few seconds applies the inactivity timeouts to the users currently not offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from homeserver.sync.notifier import Notifier
from storage.presence import PresenceRow, PresenceStore
from storage.sync import SyncQueries

logger = logging.getLogger(__name__)

STATES = ("online", "unavailable", "offline")
IDLE_AFTER_MS = 5 * 60 * 1000
OFFLINE_AFTER_SYNC_MS = 30 * 1000
ACTIVE_WINDOW_MS = 60 * 1000
# Activity is written at most this often per user (it only moves last_active_ago).
ACTIVITY_WRITE_INTERVAL_MS = 60 * 1000
SWEEP_INTERVAL_S = 5.0
# Another server's user is offline once their server has said nothing for this long
# (servers repeat the presence of online users every ~25 minutes).
REMOTE_TIMEOUT_MS = 30 * 60 * 1000
# ... and so we repeat our users' presence while they are not offline.
REMOTE_REPEAT_MS = 25 * 60 * 1000


def _now() -> int:
    return int(time.time() * 1000)


class Presence:
    def __init__(
        self,
        enabled: bool,
        store: PresenceStore,
        queries: SyncQueries,
        notifier: Notifier,
        joined_rooms: Callable[[str], Awaitable[list[str]]],
    ) -> None:
        self.enabled = enabled
        self.store = store
        self.queries = queries
        self.notifier = notifier
        # The rooms a change wakes, from the sync cache (a query per write otherwise).
        self.joined_rooms = joined_rooms
        self._rows: dict[str, PresenceRow] = {}
        self._syncing: dict[str, int] = {}
        # When each local user last finished a sync, sent an event or set presence.
        self._last_seen: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # Set when federation is on: which users are ours (the sweep times out only
        # those; other servers time out their own), and where our users' changes go
        # (m.presence EDUs to the servers sharing a room).
        self.is_local: Callable[[str], bool] = lambda user_id: True
        self.local_changed: Callable[[PresenceRow], Awaitable[None]] | None = None
        self._remote_heard: dict[str, int] = {}
        self._pushed: dict[str, int] = {}

    async def start(self) -> None:
        if not self.enabled:
            return
        now = _now()
        for row in await self.store.all_active():
            self._rows[row.user_id] = row
            self._last_seen[row.user_id] = now
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _row(self, user_id: str) -> PresenceRow | None:
        if user_id not in self._rows:
            row = await self.store.get(user_id)
            if row is None:
                return None
            self._rows[user_id] = row
        return self._rows[user_id]

    async def _write(self, user_id: str, state: str, status_msg: str | None, last_active_ts: int) -> None:
        row = await self.store.put(user_id, state, status_msg, last_active_ts)
        self._rows[user_id] = row
        self.notifier.advance("presence", row.stream_id)
        self.notifier.wake_users([user_id])
        self.notifier.wake_rooms(await self.joined_rooms(user_id))
        if self.is_local(user_id):
            await self._push(row)

    async def _push(self, row: PresenceRow) -> None:
        """Tell other servers (when federation is on) of a local user's presence."""
        if self.local_changed is None:
            return
        self._pushed[row.user_id] = _now()
        try:
            await self.local_changed(row)
        except Exception:
            logger.exception("Sending presence of %s to other servers failed", row.user_id)

    # --- changes ---------------------------------------------------------------------

    async def set_state(self, user_id: str, state: str, status_msg: str | None) -> None:
        if not self.enabled:
            return
        now = _now()
        self._last_seen[user_id] = now
        row = await self._row(user_id)
        last_active = now if state == "online" or row is None else row.last_active_ts
        await self._write(user_id, state, status_msg, last_active)

    async def set_remote(self, user_id: str, state: str, status_msg: str | None, last_active_ts: int) -> None:
        """Presence of another server's user, as their server told us (m.presence)."""
        if self.enabled:
            self._remote_heard[user_id] = _now()
            await self._write(user_id, state, status_msg, last_active_ts)

    async def user_active(self, user_id: str) -> None:
        """The user did something (sent an event): online, and last_active is now."""
        if not self.enabled:
            return
        now = _now()
        self._last_seen[user_id] = now
        row = await self._row(user_id)
        if row is not None and row.state == "online" and now - row.last_active_ts < ACTIVITY_WRITE_INTERVAL_MS:
            return
        await self._write(user_id, "online", row.status_msg if row else None, now)

    def tracks(self, set_presence: str | None) -> bool:
        """Whether a /sync with this `set_presence` counts for presence (`syncing`)."""
        return self.enabled and set_presence != "offline"

    @contextlib.asynccontextmanager
    async def syncing(self, user_id: str, set_presence: str | None) -> AsyncIterator[None]:
        if not self.tracks(set_presence):
            yield
            return
        wanted = set_presence or "online"
        row = await self._row(user_id)
        if row is None or row.state != wanted:
            now = _now()
            last_active = now if wanted == "online" or row is None else row.last_active_ts
            await self._write(user_id, wanted, row.status_msg if row else None, last_active)
        self._syncing[user_id] = self._syncing.get(user_id, 0) + 1
        try:
            yield
        finally:
            self._syncing[user_id] -= 1
            if not self._syncing[user_id]:
                del self._syncing[user_id]
            self._last_seen[user_id] = _now()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except Exception:
                logger.exception("Presence sweep failed")

    async def sweep(self) -> None:
        now = _now()
        for user_id, row in list(self._rows.items()):
            if row.state == "offline":
                continue
            if not self.is_local(user_id):
                heard = self._remote_heard.setdefault(user_id, now)
                if now - heard > REMOTE_TIMEOUT_MS:
                    await self._write(user_id, "offline", row.status_msg, row.last_active_ts)
                continue
            if user_id not in self._syncing and now - self._last_seen.get(user_id, 0) > OFFLINE_AFTER_SYNC_MS:
                await self._write(user_id, "offline", row.status_msg, row.last_active_ts)
            elif row.state == "online" and now - row.last_active_ts > IDLE_AFTER_MS:
                await self._write(user_id, "unavailable", row.status_msg, row.last_active_ts)
            elif now - self._pushed.setdefault(user_id, now) > REMOTE_REPEAT_MS:
                await self._push(row)

    # --- reading ---------------------------------------------------------------------

    @staticmethod
    def content(row: PresenceRow, now_ms: int | None = None) -> dict[str, Any]:
        now_ms = now_ms if now_ms is not None else _now()
        content: dict[str, Any] = {
            "presence": row.state,
            "last_active_ago": max(0, now_ms - row.last_active_ts),
        }
        if row.state == "online":
            content["currently_active"] = now_ms - row.last_active_ts < ACTIVE_WINDOW_MS
        if row.status_msg is not None:
            content["status_msg"] = row.status_msg
        return content

    async def get(self, user_id: str) -> dict[str, Any]:
        row = await self._row(user_id) if self.enabled else None
        if row is None:
            return {"presence": "offline"}
        return self.content(row)

    async def changed(self, user_id: str, after: int, upto: int) -> list[dict[str, Any]]:
        """m.presence events for users sharing a room with `user_id`."""
        if not self.enabled or upto <= after:
            return []
        users = await self.queries.users_sharing_rooms(user_id)
        now = _now()
        rows = await self.store.changed(sorted(users), after, upto)
        return [{"type": "m.presence", "sender": r.user_id, "content": self.content(r, now)} for r in rows]
