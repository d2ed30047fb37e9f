"""Delivery of notifications to push gateways (spec: Push Gateway API,
`POST /_matrix/push/v1/notify`), one background worker per HTTP pusher.

Each worker delivers its user's notify actions in stream order, starting after the
pusher's `last_stream_ordering` (persisted at most once a second and on stop, so a
restart resumes where it stopped, re-sending at most a second's worth, and a gateway
that was down gets everything, in order, once it is back). A failed delivery (no connection, timeout, 5xx, 429) is retried with
exponential backoff; another 4xx drops that one notification (the gateway will never
take it). A pushkey the gateway lists in `rejected` removes the pusher. The send path
only sets an asyncio event: it never waits for a gateway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from homeserver.ip_ranges import IPRangeFilter
from homeserver.push.evaluator import is_highlight, tweaks
from storage.push_actions import ActionRow
from storage.pushers import Pusher, PusherStore

if TYPE_CHECKING:
    # aiohttp is imported on the first notification, not at start-up: it is the
    # largest single import of the server and most servers have no pushers yet.
    import aiohttp

    from homeserver.homeserver import HomeServer

logger = logging.getLogger(__name__)

BATCH = 20
# Rows a worker holds in memory before it falls back to reading the database.
LIVE_MAX = 1000
PERSIST_EVERY_S = 1.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 600.0


class PusherService:
    def __init__(self, hs: HomeServer, store: PusherStore, timeout_s: float, ip_filter: IPRangeFilter) -> None:
        self.hs = hs
        self.store = store
        self._timeout_s = timeout_s
        self._ip_filter = ip_filter
        # aiohttp rather than httpx here: a big room's message can mean hundreds of
        # posts, and httpx spent about 5 ms of CPU on each (bench/push_fanout.py).
        self._client: aiohttp.ClientSession | None = None  # opened by the first post
        self._started = False
        self._workers: dict[tuple[str, str, str], _Worker] = {}
        self._by_user: dict[str, set[tuple[str, str, str]]] = {}
        self.backoff_start_s = BACKOFF_START_S

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        for pusher in await self.store.all():
            self._start_worker(pusher)

    async def stop(self) -> None:
        for worker in list(self._workers.values()):
            worker.cancel()
            try:
                await worker.persist_position(force=True)
            except Exception:
                logger.exception("Could not record the delivery position of a pusher")
        self._workers.clear()
        self._by_user.clear()
        self._started = False
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _start_worker(self, pusher: Pusher) -> None:
        if pusher.kind != "http" or not self._started:
            return
        old = self._workers.get(pusher.key)
        self._stop_worker(pusher.key)
        worker = _Worker(self, pusher)
        if old is not None:
            worker.position = max(worker.position, old.position)  # not persisted yet
        self._workers[pusher.key] = worker
        self._by_user.setdefault(pusher.user_id, set()).add(pusher.key)
        worker.start()

    def _stop_worker(self, key: tuple[str, str, str]) -> None:
        worker = self._workers.pop(key, None)
        if worker is not None:
            worker.cancel()
        keys = self._by_user.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[key[0]]

    # --- what the API and the send path call -----------------------------------------

    async def set_pusher(self, pusher: Pusher, *, append: bool) -> None:
        stored, removed = await self.store.set(pusher, append=append)
        for other in removed:
            self._stop_worker(other.key)
        self._start_worker(stored)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.store.delete(user_id, app_id, pushkey)
        self._stop_worker((user_id, app_id, pushkey))

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """Pushers belong to the access token (device) that made them."""
        for pusher in await self.store.delete_for_devices(user_id, device_ids):
            self._stop_worker(pusher.key)

    async def user_deactivated(self, user_id: str) -> None:
        for pusher in await self.store.delete_for_user(user_id):
            self._stop_worker(pusher.key)

    def actions_written(self, rows: list[ActionRow]) -> None:
        """Called after the rows are committed: hand them to their users' workers."""
        for row in rows:
            for key in self._by_user.get(row.user_id, ()):
                self._workers[key].offer(row)

    def counts_changed(self, user_id: str) -> None:
        """The user's unread counts may have dropped (they read something, perhaps on
        another device): their pushers send the new badge if it changed."""
        for key in self._by_user.get(user_id, ()):
            self._workers[key].offer_badge()

    # --- one delivery ----------------------------------------------------------------

    async def notification(self, pusher: Pusher, row: ActionRow, unread: int) -> dict[str, Any]:
        """The body of POST /_matrix/push/v1/notify for one action row; `unread` is
        the user's badge count."""
        hs = self.hs
        device = {**_device(pusher), "tweaks": tweaks(row.actions)}
        counts = {"unread": unread} if unread else {}
        event = await hs.events.get_event(row.event_id)
        high = is_highlight(row.actions) or "sound" in device["tweaks"]
        if event is not None and event.type == "m.room.encrypted":
            high = True  # the gateway cannot tell what it is: assume it matters
        notification: dict[str, Any] = {
            "event_id": row.event_id,
            "room_id": row.room_id,
            "counts": counts,
            "devices": [device],
            "prio": "high" if high else "low",
        }
        if pusher.data.get("format") == "event_id_only" or event is None:
            return {"notification": notification}
        notification["type"] = event.type
        notification["sender"] = event.sender
        if event.content and not event.redacted_by:
            notification["content"] = event.content
        members = await hs.push_actions.members.joined(row.room_id)
        name = members.get(event.sender)
        if name:
            notification["sender_display_name"] = name
        if event.type == "m.room.member":
            notification["user_is_target"] = event.state_key == pusher.user_id
        room_name = await hs.room_events.state_event(row.room_id, "m.room.name")
        if room_name is not None and isinstance(room_name.content.get("name"), str) and room_name.content["name"]:
            notification["room_name"] = room_name.content["name"]
        alias = await hs.room_events.state_event(row.room_id, "m.room.canonical_alias")
        if alias is not None and isinstance(alias.content.get("alias"), str):
            notification["room_alias"] = alias.content["alias"]
        return {"notification": notification}

    def badge(self, pusher: Pusher, unread: int) -> dict[str, Any]:
        """A notification of new counts only, about no event (the push gateway API
        allows leaving the event out): the phone's badge follows reading elsewhere.
        A count of zero is sent, as that is what clears the badge."""
        return {"notification": {"counts": {"unread": unread}, "devices": [_device(pusher)], "prio": "low"}}

    async def post(self, pusher: Pusher, body: dict[str, Any]) -> str:
        """'ok', 'retry', 'drop' (this notification) or 'rejected' (the pusher)."""
        import aiohttp  # here, not at the top: see the TYPE_CHECKING import

        if self._client is None:
            if not self._started:
                return "retry"  # stopping
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(
                    limit=100, limit_per_host=20, resolver=_filtering_resolver(self._ip_filter)
                ),
            )
        url = str(pusher.data.get("url"))
        if _literal_address_blocked(url, self._ip_filter):
            logger.info("Push gateway %s is in a blocked IP range (push.ip_range_blocklist)", url)
            return "retry"
        try:
            async with self._client.post(url, json=body, allow_redirects=False) as response:
                status = response.status
                try:
                    answer = await response.json(content_type=None) if status < 300 else None
                except ValueError:
                    answer = None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            logger.info("Push gateway %s unreachable: %s", url, exc)
            return "retry"
        if status >= 500 or status == 429:
            logger.info("Push gateway %s answered %d", url, status)
            return "retry"
        if status >= 300:
            logger.warning("Push gateway %s refused a notification (%d)", url, status)
            return "drop"
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if isinstance(rejected, list) and pusher.pushkey in rejected:
            return "rejected"
        return "ok"


class _Worker:
    """Delivers one pusher's notifications in order.

    While caught up, it takes the rows the writer hands over (`offer`, after commit)
    without reading the database; after a start, a failure or an overflow it reads
    them from `event_push_recipients` until it finds nothing newer, and only then goes
    back to the handed-over rows (skipping what it already sent). Every row committed
    after that last empty read is handed over, so nothing falls between the two."""

    def __init__(self, service: PusherService, pusher: Pusher) -> None:
        self.service = service
        self.pusher = pusher
        self.position = pusher.last_stream_ordering
        self._persisted = self.position
        self._persisted_at = 0.0
        self._live: deque[ActionRow] = deque()
        self._behind = True  # catch up with what arrived while nobody was delivering
        self._badge_due = False
        self._badge_sent: int | None = None  # the count the gateway last had from us
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def offer(self, row: ActionRow) -> None:
        if len(self._live) >= LIVE_MAX:
            self._live.clear()
            self._behind = True  # far behind (a gateway down): read from the database
        else:
            self._live.append(row)
        self._wake.set()

    def offer_badge(self) -> None:
        self._badge_due = True
        self._wake.set()

    async def _next_batch(self) -> list[ActionRow]:
        if self._behind:
            hs = self.service.hs
            positions = hs.events.positions
            settled = positions.finished
            rows = await hs.push_actions.store.pending(self.pusher.user_id, self.position, positions.last, BATCH)
            if rows:
                return rows
            self._behind = False
            # Nothing for this user up to `settled` (all of it was in the database
            # before the read): the next catch-up, after a restart, starts there
            # instead of reading again every position since the last notification.
            self.position = max(self.position, settled)
        rows = []
        while self._live and len(rows) < BATCH:
            row = self._live.popleft()
            if row.stream_ordering > self.position:
                rows.append(row)
        return rows

    async def persist_position(self, *, force: bool = False) -> None:
        """Written at most once a second while busy (a crash re-sends at most that
        much; gateways drop duplicates by event_id), and on stop."""
        now = time.monotonic()
        if self.position > self._persisted and (force or now - self._persisted_at >= PERSIST_EVERY_S):
            self._persisted_at = now
            position = self.position
            await self.service.store.set_position(self.pusher.user_id, self.pusher.app_id, self.pusher.pushkey, position)
            self._persisted = position

    async def _run(self) -> None:
        service = self.service
        pusher = self.pusher
        while True:
            if self.position > self._persisted and not self._wake.is_set():
                # Idle for a moment: persist what a busy spell deferred.
                try:
                    await asyncio.wait_for(self._wake.wait(), PERSIST_EVERY_S)
                except TimeoutError:
                    await self.persist_position(force=True)
                    continue
            await self._wake.wait()
            self._wake.clear()
            try:
                while True:
                    rows = await self._next_batch()
                    if not rows:
                        break
                    # One badge count per batch, not per notification.
                    badge = await service.hs.push_actions.store.badge_count(pusher.user_id)
                    for row in rows:
                        if not await self._deliver(row, badge):
                            return
                        self.position = row.stream_ordering
                        self._badge_sent = badge
                    await self.persist_position()
                if self._badge_due and not await self._update_badge():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Pusher %s/%s of %s failed; retrying later", pusher.app_id, pusher.pushkey, pusher.user_id)
                self._behind = True
                await asyncio.sleep(service.backoff_start_s)
                self._wake.set()

    async def _deliver(self, row: ActionRow, badge: int) -> bool:
        """Deliver one row, retrying until it is taken; False: the pusher is gone."""
        service = self.service
        body = await service.notification(self.pusher, row, badge)
        delay = service.backoff_start_s
        while True:
            outcome = await service.post(self.pusher, body)
            if outcome in ("ok", "drop"):
                return True
            if outcome == "rejected":
                await self._remove()
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _update_badge(self) -> bool:
        """Send the badge count if it changed since the gateway last had one: once,
        without retries (the next notification carries the count anyway); False:
        the pusher is gone."""
        self._badge_due = False
        service = self.service
        badge = await service.hs.push_actions.store.badge_count(self.pusher.user_id)
        if badge == self._badge_sent:
            return True
        outcome = await service.post(self.pusher, service.badge(self.pusher, badge))
        if outcome == "rejected":
            await self._remove()
            return False
        if outcome == "ok":
            self._badge_sent = badge
        return True

    async def _remove(self) -> None:
        service = self.service
        logger.info("Push gateway rejected pushkey of %s: removing the pusher", self.pusher.user_id)
        await service.store.delete(self.pusher.user_id, self.pusher.app_id, self.pusher.pushkey)
        if service._workers.get(self.pusher.key) is self:
            service._stop_worker(self.pusher.key)  # cancels this task, after its caller returns


def _device(pusher: Pusher) -> dict[str, Any]:
    """The pusher as a notification's `devices` entry (its data without the url)."""
    return {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts,
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
    }


def _literal_address_blocked(url: str, ip_filter: IPRangeFilter) -> bool:
    """aiohttp connects to an IP literal without asking the resolver: check it here."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the resolver checks what it resolves to
    return ip_filter.is_blocked(address)


def _filtering_resolver(ip_filter: IPRangeFilter) -> Any:
    """An aiohttp resolver that leaves out blocked addresses: the connector connects to
    what it returns, so a name cannot be re-resolved to a blocked address later."""
    import aiohttp

    class FilteringResolver(aiohttp.ThreadedResolver):
        async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> Any:
            results = await super().resolve(host, port, family)
            allowed = [r for r in results if not ip_filter.is_blocked(ipaddress.ip_address(r["host"].split("%")[0]))]
            if not allowed:
                raise OSError(f"{host} resolves only to blocked addresses (push.ip_range_blocklist)")
            return allowed

    return FilteringResolver()
