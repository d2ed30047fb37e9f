"""Stream positions of room events: handed out by this process, in order, and tracked
until each is finished.

Every event insert takes its position here, synchronously, before its transaction
begins, so positions are in the order writers start; the writer finishes its position
once the event has been announced to the listeners (or right after commit, for an
event nobody is told about, or when its transaction fails). An event is announced
only when every position before its own is finished.

The database's own counter (a PostgreSQL sequence) could not give that: two
transactions take positions 101 and 102 from it and may commit in either order. Had
102 been announced first, a /sync would have handed out a token past 101 while 101
was not yet visible, and that client would never have seen 101. On SQLite, where
commits are serialised, the two orders always agreed; they now agree on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# A position left unfinished is a bug (a writer that neither announced nor released
# its event); rather than stall every later announcement for good, they go on after
# this long, with an error in the log.
UNFINISHED_TIMEOUT_S = 30.0


class EventPositions:
    def __init__(self) -> None:
        self._last = 0
        self._open: dict[int, asyncio.Future[None]] = {}

    @property
    def last(self) -> int:
        """The highest position handed out (or in the database at start)."""
        return self._last

    @property
    def finished(self) -> int:
        """The highest position at or below which every position is finished (its
        event announced, so what its listeners write is in the database)."""
        for open_position in self._open:  # ascending: taken in order
            return open_position - 1
        return self._last

    def load(self, highest: int) -> None:
        """The highest position in the database, read at start."""
        self._last = max(self._last, highest)

    def take(self) -> int:
        """The next position, open until `finish`ed."""
        self._last += 1
        self._open[self._last] = asyncio.get_running_loop().create_future()
        return self._last

    @contextlib.contextmanager
    def taken(self) -> Iterator[int]:
        """`take`, and `finish` again if the block fails: a stored event's position
        stays open for its announcement."""
        position = self.take()
        try:
            yield position
        except BaseException:
            self.finish(position)
            raise

    def finish(self, position: int) -> None:
        """The position's event was announced, or will never be; idempotent."""
        done = self._open.pop(position, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def wait_for_earlier(self, position: int) -> None:
        """Until every position before `position` is finished."""
        earlier = []
        for open_position, done in self._open.items():  # ascending: taken in order
            if open_position >= position:
                break
            earlier.append(done)
        if not earlier:
            return
        # asyncio.wait leaves the futures alone on timeout or cancellation.
        _, pending = await asyncio.wait(earlier, timeout=UNFINISHED_TIMEOUT_S)
        if pending:
            stuck = sorted(p for p in self._open if p < position)
            logger.error("Room event positions %s were never finished; announcing %d anyway", stuck, position)
