"""/sync as a service: parse what the client asked for, wait on the notifier until
there is something new for this user (or the timeout), answer."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.sync.builder import SyncBuilder, SyncRequest
from homeserver.sync.filters import SyncFilter
from homeserver.sync.tokens import SyncToken
from storage.events import StoredEvent

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

MAX_TIMEOUT_MS = 5 * 60 * 1000
# Builds running at once. When thousands of long-polls wake together, the rest queue
# here (no timeout) instead of in the database pool (which times out), and other
# requests still get a connection.
CONCURRENT_BUILDS = 8
PARSED_FILTERS = 100_000


class SyncService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.builder = SyncBuilder(hs)
        self._build_slots = asyncio.Semaphore(CONCURRENT_BUILDS)
        self._parsed_filters: dict[tuple[str, int], SyncFilter] = {}

    async def on_event(self, event: StoredEvent) -> None:
        """RoomEvents listener: a room event was persisted."""
        notifier = self.hs.notifier
        member = event.state_key if event.type == "m.room.member" else None
        self.hs.sync_cache.event_persisted(event.room_id, event.stream_ordering, member)
        notifier.advance("room", event.stream_ordering)
        notifier.wake_rooms([event.room_id])
        if event.type == "m.room.member" and event.state_key:
            # Invites, joins, kicks: the target may not be in the room's waiter set.
            notifier.wake_users([event.state_key])
            if event.content.get("membership") != "join":
                self.hs.typing.user_left(event.room_id, event.state_key)
        if event.state_key is None:
            await self.hs.presence.user_active(event.sender)

    async def on_account_data(self, user_id: str, position: int) -> None:
        self.hs.sync_cache.account_data_changed(user_id)
        self.hs.notifier.advance("account_data", position)
        self.hs.notifier.wake_users([user_id])

    async def load_filter(self, user_id: str, value: str | None) -> SyncFilter:
        if value is None or value == "":
            return SyncFilter()
        if value.startswith("{"):
            try:
                definition: Any = json.loads(value)
            except ValueError:
                raise MatrixError(400, "M_NOT_JSON", "The inline filter is not valid JSON") from None
            return SyncFilter.parse(definition)
        if not value.isdigit() or len(value) > 18:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid filter ID")
        key = (user_id, int(value))
        parsed = self._parsed_filters.get(key)
        if parsed is not None:
            return parsed
        stored = await self.hs.filters.get(user_id, int(value))
        if stored is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown filter ID")
        parsed = SyncFilter.parse(stored)
        # Stored filters never change (there is no API to edit one), and nothing
        # mutates a parsed filter: every long-poll of a client shares one.
        if len(self._parsed_filters) >= PARSED_FILTERS:
            self._parsed_filters.clear()
        self._parsed_filters[key] = parsed
        return parsed

    def parse_since(self, since: str | None) -> SyncToken | None:
        if since is None or since == "":
            return None
        return SyncToken.parse(since, self.hs.notifier.token())

    async def sync(self, request: SyncRequest, timeout_ms: int) -> dict[str, Any]:
        hs = self.hs
        notifier = hs.notifier
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        waiter = notifier.register(request.user_id)
        try:
            while True:
                notifier.set_rooms(waiter, await hs.sync_cache.joined_room_ids(request.user_id))
                async with self._build_slots:
                    response, has_updates = await self.builder.build(request, notifier.token())
                if has_updates or request.since is None or request.full_state or notifier.shutting_down:
                    return response
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return response
                # Nothing new: wait without holding on to the empty answer (thousands
                # of waiting long-polls would keep thousands of them); on timeout the
                # answer is built afresh.
                del response
                if not await waiter.wait(remaining):
                    async with self._build_slots:
                        return (await self.builder.build(request, notifier.token()))[0]
        finally:
            notifier.unregister(waiter)
