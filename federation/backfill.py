"""History from before we joined a room: GET /_matrix/federation/v1/backfill
(spec: Server-Server API, "Backfilling and retrieving missing events").

`RoomReader.messages` calls `Backfiller.backfill` when a backwards page reaches the
oldest timeline event we hold and the room's graph continues further back (its
backward extremities: prev_events we do not hold). We ask a server in the room for
events before those, check each as any received PDU (signatures, content hash, the
auth rules against its auth events and against the state before it), and store them
as history: below every stream position we have (so they never reach /sync), with
the state after each so history visibility applies as usual.

The state before the oldest event of a batch comes from /state_ids; the batch is
then walked oldest first by depth, each state event updating the state. Forks inside
one batch are linearised by depth, a simplification: the visibility of history in a
forked stretch follows the branch order, not a resolution of the branches.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from federation.client import FederationError
from federation.pdu_checks import BadPdu, checked_pdu
from homeserver.errors import MatrixError
from homeserver.events import (
    AuthError,
    RoomVersion,
    auth_event_types,
    check_auth,
    check_auth_events,
    domain_of,
)
from homeserver.rooms.events import CREATE_KEY, RoomHead
from storage.events import BackfilledEvent
from storage.state import StateKey

logger = logging.getLogger(__name__)

MIN_BATCH = 20
MAX_BATCH = 100
# Auth and state events fetched one by one with /event: a bound on what one backfill
# may pull in, so a peer cannot make us fetch without end.
MAX_FETCHED = 500


class Backfiller:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self._room_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Stream positions below the current minimum are handed out one batch at a time.
        self._persist_lock = asyncio.Lock()
        # room -> the backward extremities no server had anything older for.
        self._exhausted: dict[str, frozenset[str]] = {}
        # room -> backward extremities a server was asked for and did not deliver intact
        # (badly signed, forged, missing). Asking for them again would hand a peer that
        # answers newest-first the same page every time, and history would stop there.
        self._unobtainable: dict[str, set[str]] = {}

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._room_locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._room_locks[room_id] = lock
        return lock

    async def backfill(self, room_id: str, wanted: int) -> bool:
        """Fetch and store older events of the room; True if any were added."""
        hs = self.hs
        async with self._lock(room_id):
            unobtainable = self._unobtainable.get(room_id, set())
            extremities = [e for e in await hs.events.backward_extremities(room_id) if e not in unobtainable]
            if not extremities or self._exhausted.get(room_id) == frozenset(extremities):
                return False
            try:
                head = await hs.room_events.head(room_id)
            except MatrixError:
                return False
            limit = min(max(wanted, MIN_BATCH), MAX_BATCH)
            for server in await self._servers(room_id, head):
                try:
                    added = await self._backfill_from(server, room_id, head, extremities, limit)
                except (FederationError, BadPdu) as exc:
                    logger.info("Backfill of %s from %s failed: %s", room_id, server, exc)
                    continue
                except Exception:
                    # /messages still serves what we hold; the failure is ours to fix.
                    logger.exception("Backfill of %s from %s failed", room_id, server)
                    continue
                if added:
                    return True
            self._exhausted[room_id] = frozenset(extremities)
            return False

    async def _servers(self, room_id: str, head: RoomHead) -> list[str]:
        hs = self.hs
        members = await hs.room_store.members(room_id, ("join",))
        servers = sorted({domain_of(m.user_id) for m in members})
        create = await hs.events.get_event(head.create_event_id)
        if create is not None:
            # The room's creator's server has held the room the longest.
            servers.insert(0, domain_of(create.sender))
        return [s for s in dict.fromkeys(servers) if s != hs.server_name and hs.federation.client.allowed(s)]

    async def _backfill_from(
        self, server: str, room_id: str, head: RoomHead, extremities: list[str], limit: int
    ) -> int:
        hs = self.hs
        version = head.room_version
        asked = extremities[:20]
        body = await hs.federation.client.request(
            "GET",
            server,
            f"/_matrix/federation/v1/backfill/{room_id}",
            query={"v": asked, "limit": str(limit)},
        )
        raw_pdus = body.get("pdus") if isinstance(body, dict) else None
        if not isinstance(raw_pdus, list):
            raise BadPdu("backfill returned no pdus")
        batch: dict[str, dict[str, Any]] = {}
        for raw in raw_pdus[:MAX_BATCH]:
            try:
                event_id, pdu = await checked_pdu(hs.federation.keys, version, raw)
            except BadPdu as exc:
                logger.info("Dropped a backfilled PDU from %s: %s", server, exc.reason)
                continue
            if not self._of_room(room_id, head, event_id, pdu):
                continue
            batch[event_id] = pdu
        self._unobtainable.setdefault(room_id, set()).update(e for e in asked if e not in batch)
        # Only what lies behind our backward extremities: anything else (events newer
        # than those, or of another branch) has no place below all we hold.
        reachable: set[str] = set()
        frontier = [e for e in extremities if e in batch]
        while frontier:
            event_id = frontier.pop()
            if event_id in reachable:
                continue
            reachable.add(event_id)
            frontier.extend(p for p in batch[event_id].get("prev_events", []) if p in batch)
        batch = {i: p for i, p in batch.items() if i in reachable}
        held = await hs.events.held_in_graph(list(batch))
        new = {i: p for i, p in batch.items() if i not in held}
        if not new:
            return 0
        ordered = sorted(new.items(), key=lambda kv: (depth_of(kv[1]), kv[0]))
        fetcher = RemoteEventFetcher(hs, server, room_id, head, batch)
        oldest_id, oldest = ordered[0]
        state = {} if oldest.get("type") == "m.room.create" else await fetcher.state_before(oldest_id)
        create_pdu = await fetcher.create_event()

        items: list[BackfilledEvent] = []
        for event_id, pdu in ordered:
            reason = await self._check(fetcher, version, head, event_id, pdu, state, create_pdu)
            state_key = pdu.get("state_key")
            if reason is None and isinstance(state_key, str):
                state = {**state, (pdu["type"], state_key): event_id}
            elif reason is not None:
                logger.info("Backfilled %s from %s rejected: %s", event_id, server, reason)
            items.append(BackfilledEvent(event_id, pdu, dict(state), reason))
        await hs.events.persist_outliers(room_id, fetcher.outliers)
        async with self._persist_lock:
            stored = await hs.events.persist_backfilled(room_id, items)
        return len(stored)

    @staticmethod
    def _of_room(room_id: str, head: RoomHead, event_id: str, pdu: dict[str, Any]) -> bool:
        if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
            return event_id == head.create_event_id
        return pdu.get("room_id") == room_id

    async def _check(
        self,
        fetcher: RemoteEventFetcher,
        version: RoomVersion,
        head: RoomHead,
        event_id: str,
        pdu: dict[str, Any],
        state_before: dict[StateKey, str],
        create_pdu: dict[str, Any] | None,
    ) -> str | None:
        """Why the event fails the auth rules, or None (spec: checks on receipt)."""
        try:
            if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
                check_auth(version, pdu, {})
                return None
            auth = await fetcher.events(list(pdu.get("auth_events", [])))
            auth_state = check_auth_events(version, pdu, auth, create_event=create_pdu)
            check_auth(version, pdu, auth_state, enforce_size_limits=False, create_event_id=head.create_event_id)
            keys = auth_event_types(version, pdu["type"], pdu.get("state_key"), pdu["sender"], pdu.get("content", {}))
            wanted = {key: state_before[key] for key in {CREATE_KEY, *keys} if key in state_before}
            found = await fetcher.events(list(wanted.values()))
            before = {key: found[i] for key, i in wanted.items() if i in found}
            if create_pdu is not None:
                before.setdefault(CREATE_KEY, create_pdu)
            check_auth(version, pdu, before, enforce_size_limits=False, create_event_id=head.create_event_id)
        except AuthError as exc:
            return f"fails auth: {exc.args[0]}"
        except (KeyError, TypeError) as exc:
            return f"malformed: {exc}"
        return None


def depth_of(pdu: dict[str, Any]) -> int:
    depth = pdu.get("depth")
    return depth if isinstance(depth, int) else 0


class RemoteEventFetcher:
    """Events needed to check others (a backfill batch, or an event beyond a gap):
    from the store, the batch itself, or /event on one server (kept as outliers)."""

    def __init__(self, hs: Any, server: str, room_id: str, head: RoomHead, batch: dict[str, dict[str, Any]]) -> None:
        self.hs = hs
        self.server = server
        self.room_id = room_id
        self.head = head
        self.batch = batch
        self.outliers: dict[str, dict[str, Any]] = {}
        self._fetched = 0

    async def create_event(self) -> dict[str, Any] | None:
        found = await self.events([self.head.create_event_id])
        return found.get(self.head.create_event_id)

    async def events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The PDUs among `event_ids` we have or can fetch (unknown ones left out)."""
        out: dict[str, dict[str, Any]] = {}
        stored = await self.hs.events.get_events([i for i in event_ids if i not in self.batch and i not in self.outliers])
        for event_id in event_ids:
            if event_id in self.batch:
                out[event_id] = self.batch[event_id]
            elif event_id in self.outliers:
                out[event_id] = self.outliers[event_id]
            elif event_id in stored:
                out[event_id] = stored[event_id].pdu
            else:
                pdu = await self._fetch(event_id)
                if pdu is not None:
                    out[event_id] = pdu
        return out

    async def _fetch(self, event_id: str) -> dict[str, Any] | None:
        if self._fetched >= MAX_FETCHED:
            return None
        self._fetched += 1
        hs = self.hs
        try:
            body = await hs.federation.client.request("GET", self.server, f"/_matrix/federation/v1/event/{event_id}")
            pdus = body.get("pdus") if isinstance(body, dict) else None
            if not isinstance(pdus, list) or not pdus:
                return None
            fetched_id, pdu = await checked_pdu(hs.federation.keys, self.head.room_version, pdus[0])
        except (FederationError, BadPdu) as exc:
            logger.info("Could not fetch %s from %s: %s", event_id, self.server, exc)
            return None
        if fetched_id != event_id or not Backfiller._of_room(self.room_id, self.head, event_id, pdu):
            return None
        self.outliers[event_id] = pdu
        return pdu

    async def state_before(self, event_id: str) -> dict[StateKey, str]:
        """The room state before `event_id`, from the server's /state_ids."""
        body = await self.hs.federation.client.request(
            "GET", self.server, f"/_matrix/federation/v1/state_ids/{self.room_id}", query={"event_id": event_id}
        )
        ids = body.get("pdu_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            raise BadPdu("state_ids returned no pdu_ids")
        found = await self.events([i for i in ids if isinstance(i, str)])
        state: dict[StateKey, str] = {}
        for some_id, pdu in found.items():
            state_key = pdu.get("state_key")
            if isinstance(state_key, str) and isinstance(pdu.get("type"), str):
                state[(pdu["type"], state_key)] = some_id
        if CREATE_KEY not in state:
            state[CREATE_KEY] = self.head.create_event_id
        return state
