"""The notifier: current stream positions, and the waiting /sync requests.

A waiting sync registers a `Waiter` under its user and under each room it is joined
to. When something is written, the writer advances the stream position and wakes
exactly the waiters that care: per room (room events, typing, receipts) or per user
(account data, to-device, invites, device lists and presence fan out to the rooms the
user is in). A waiter is one future; nothing polls.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from homeserver.sync.tokens import STREAMS, SyncToken


class Waiter:
    """One waiting /sync. Its future resolves True when woken and False when its
    timer fires: one timer handle per wait, no task of its own (with 10,000
    long-polls held, every object per waiter counts)."""

    __slots__ = ("_future", "room_ids", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.room_ids: frozenset[str] = frozenset()
        self._future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self._future.done():
            self._future.set_result(True)

    @property
    def woken(self) -> bool:
        return self._future.done() and not self._future.cancelled() and self._future.result()

    @staticmethod
    def _expire(future: asyncio.Future[bool]) -> None:
        if not future.done():
            future.set_result(False)

    async def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout; the waiter is re-armed either way."""
        future = self._future
        if timeout <= 0:
            woken = future.done()
        else:
            timer = asyncio.get_running_loop().call_later(timeout, self._expire, future)
            try:
                woken = await future
            finally:
                timer.cancel()
        if future.done():
            self._future = asyncio.get_running_loop().create_future()
        return woken


class Notifier:
    def __init__(self) -> None:
        self._positions: dict[str, int] = {name: 0 for name in STREAMS}
        self._by_user: defaultdict[str, set[Waiter]] = defaultdict(set)
        self._by_room: defaultdict[str, set[Waiter]] = defaultdict(set)
        self.shutting_down = False

    # --- positions -------------------------------------------------------------------

    def load(self, positions: dict[str, int]) -> None:
        for name, value in positions.items():
            if name in self._positions:
                self._positions[name] = max(self._positions[name], value)

    def advance(self, stream: str, position: int) -> None:
        self._positions[stream] = max(self._positions[stream], position)

    def position(self, stream: str) -> int:
        return self._positions[stream]

    def token(self) -> SyncToken:
        return SyncToken(**self._positions)

    # --- waiting ---------------------------------------------------------------------

    def register(self, user_id: str) -> Waiter:
        waiter = Waiter(user_id)
        self._by_user[user_id].add(waiter)
        if self.shutting_down:
            waiter.wake()
        return waiter

    def set_rooms(self, waiter: Waiter, room_ids: Iterable[str]) -> None:
        rooms = frozenset(room_ids)
        for room_id in waiter.room_ids - rooms:
            self._discard(self._by_room, room_id, waiter)
        for room_id in rooms - waiter.room_ids:
            self._by_room[room_id].add(waiter)
        waiter.room_ids = rooms

    def unregister(self, waiter: Waiter) -> None:
        self._discard(self._by_user, waiter.user_id, waiter)
        for room_id in waiter.room_ids:
            self._discard(self._by_room, room_id, waiter)
        waiter.room_ids = frozenset()

    @staticmethod
    def _discard(index: defaultdict[str, set[Waiter]], key: str, waiter: Waiter) -> None:
        waiters = index.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del index[key]

    def wake_users(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            for waiter in self._by_user.get(user_id, ()):
                waiter.wake()

    def wake_rooms(self, room_ids: Iterable[str]) -> None:
        for room_id in room_ids:
            for waiter in self._by_room.get(room_id, ()):
                waiter.wake()

    def wake_all(self) -> None:
        """At shutdown: let every long-poll answer now instead of holding the exit."""
        self.shutting_down = True
        for waiters in list(self._by_user.values()):
            for waiter in waiters:
                waiter.wake()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._by_user.values())
