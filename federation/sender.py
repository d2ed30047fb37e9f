"""Outgoing transactions: one queue per destination, PUT /send/{txnId} with at most 50
PDUs, retried with exponential backoff while the peer is down. The queue lives in the
database, so events persisted before a restart still go out after it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from federation.client import FederationError
from homeserver.events import domain_of
from storage.events import StoredEvent
from storage.federation import OutboxStore

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
# EDUs are ephemeral and kept in memory only; a peer that stays down loses the oldest.
MAX_QUEUED_EDUS = 1000
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 15 * 60


class DestinationQueue:
    def __init__(self, sender: FederationSender, destination: str) -> None:
        self.sender = sender
        self.destination = destination
        self.wakeup = asyncio.Event()
        self.task = asyncio.create_task(self._run())
        self.backoff = 0.0
        self.edus: list[dict[str, Any]] = []

    def add_edu(self, edu: dict[str, Any]) -> None:
        self.edus.append(edu)
        if len(self.edus) > MAX_QUEUED_EDUS:
            del self.edus[: len(self.edus) - MAX_QUEUED_EDUS]
        self.wake()

    def wake(self) -> None:
        self.wakeup.set()

    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                sent_any = await self._send_some()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Federation queue to %s failed", self.destination)
                sent_any = False
            if sent_any:
                continue
            if self.backoff:
                try:
                    await asyncio.wait_for(self.wakeup.wait(), self.backoff)
                except asyncio.TimeoutError:
                    pass
                continue
            await self.wakeup.wait()

    async def _send_some(self) -> bool:
        sender = self.sender
        event_ids = await sender.outbox.pending(self.destination, MAX_PDUS_PER_TRANSACTION)
        edus = self.edus[:MAX_EDUS_PER_TRANSACTION]
        if not event_ids and not edus:
            self.backoff = 0.0
            return False
        found = await sender.hs.events.get_events(event_ids)
        pdus = [{k: v for k, v in found[i].pdu.items() if k != "unsigned"} for i in event_ids if i in found]
        try:
            await sender.hs.federation.client.request(
                "PUT",
                self.destination,
                f"/_matrix/federation/v1/send/{sender.next_txn_id()}",
                content={
                    "origin": sender.hs.server_name,
                    "origin_server_ts": int(time.time() * 1000),
                    "pdus": pdus,
                    "edus": edus,
                },
            )
        except FederationError as exc:
            self.backoff = min(MAX_BACKOFF_S, max(MIN_BACKOFF_S, self.backoff * 2))
            logger.info("Sending to %s failed (%s); retrying in %.1fs", self.destination, exc, self.backoff)
            return False
        self.backoff = 0.0
        del self.edus[: len(edus)]
        if event_ids:
            await sender.outbox.remove(self.destination, event_ids)
        return True


class FederationSender:
    def __init__(self, hs: Any, outbox: OutboxStore) -> None:
        self.hs = hs
        self.outbox = outbox
        self.queues: dict[str, DestinationQueue] = {}
        self._txn_base = int(time.time() * 1000)
        self._txn_counter = 0

    def next_txn_id(self) -> str:
        self._txn_counter += 1
        return f"{self._txn_base}_{self._txn_counter}"

    def _queue(self, destination: str) -> DestinationQueue:
        queue = self.queues.get(destination)
        if queue is None:
            queue = DestinationQueue(self, destination)
            self.queues[destination] = queue
        return queue

    async def start(self) -> None:
        for destination in await self.outbox.destinations():
            self._queue(destination).wake()

    async def on_event(self, event: StoredEvent) -> None:
        """RoomEvents listener: queue our own events for every other server in the room."""
        if domain_of(event.sender) != self.hs.server_name:
            return
        await self._enqueue(event, set())

    async def relay(self, event: StoredEvent, origin: str) -> None:
        """Queue another server's event that reached the room through us (send_join,
        send_leave, send_knock) for the room's other servers: its origin is not in the
        room yet (or any more), so it cannot tell them itself (spec: Server-Server API,
        "Joining Rooms": the resident server sends the join to the other servers)."""
        if event.outlier or event.rejected_reason:
            return
        await self._enqueue(event, {origin, domain_of(event.sender)})

    async def _enqueue(self, event: StoredEvent, skip: set[str]) -> None:
        hs = self.hs
        members = await hs.room_store.members(event.room_id, ("join", "invite", "knock"))
        destinations = {domain_of(m.user_id) for m in members}
        if event.type == "m.room.member" and event.state_key and ":" in event.state_key:
            destinations.add(domain_of(event.state_key))
        destinations -= skip | {hs.server_name}
        destinations = {d for d in destinations if hs.federation.client.allowed(d)}
        if not destinations:
            return
        await self.outbox.add(sorted(destinations), event.event_id, event.stream_ordering)
        for destination in destinations:
            self._queue(destination).wake()

    def send_edu(self, destinations: set[str], edu_type: str, content: dict[str, Any]) -> None:
        """Queue an EDU (typing, receipts, presence, device lists...) for other servers."""
        for destination in destinations:
            if destination != self.hs.server_name and self.hs.federation.client.allowed(destination):
                self._queue(destination).add_edu({"edu_type": edu_type, "content": content})

    async def servers_in_room(self, room_id: str) -> set[str]:
        members = await self.hs.room_store.members(room_id, ("join",))
        return {domain_of(m.user_id) for m in members} - {self.hs.server_name}

    def peer_is_back(self, destination: str) -> None:
        """A request from a server shows it is up again: retry its queue now."""
        queue = self.queues.get(destination)
        if queue is not None and queue.backoff:
            queue.backoff = 0.0
            queue.wake()

    async def stop(self) -> None:
        for queue in self.queues.values():
            queue.task.cancel()
