"""WAL checkpoints for the SQLite file, on a thread of their own.

In WAL mode each commit appends pages to the `-wal` file, and SQLite copies them back
into the database file (a checkpoint, with its fsyncs) when a commit finds the WAL
past 1,000 pages. That commit pays for it: with the SQLite calls on the event loop's
thread (storage/sqlite_inline.py), every hundredth or so write stalled the whole
server for about 8 ms. Our connections turn the automatic checkpoint off
(`wal_autocheckpoint=0`) and `Database` calls `committed()` after each commit; every
`EVERY_COMMITS` commits a PASSIVE checkpoint runs on this thread with a connection of
its own. PASSIVE never waits for readers or writers, the sqlite3 module releases the
GIL while it works, and a commit stays as durable as before (WAL with
synchronous=NORMAL: committed means in the WAL, which survives kill -9).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor

logger = logging.getLogger(__name__)

# About as many pages as SQLite's own threshold: a room event's transaction writes
# roughly ten.
EVERY_COMMITS = 100


class WalCheckpointer:
    def __init__(self, path: str) -> None:
        self._path = path
        self._commits = 0
        self._running: Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def committed(self) -> None:
        """A write transaction of ours committed (on the loop's thread)."""
        self._commits += 1
        if self._commits < EVERY_COMMITS or self._running is not None:
            return
        self._commits = 0
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._running = self._executor.submit(self._checkpoint)
        loop = asyncio.get_running_loop()
        self._running.add_done_callback(lambda done: loop.call_soon_threadsafe(self._finished, done))

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _finished(self, done: Future[None]) -> None:
        self._running = None
        error = done.exception()
        if error is not None:
            # The next one tries again; until then the WAL just grows.
            logger.warning("WAL checkpoint failed: %s", error)

    def close(self) -> None:
        """Wait for a checkpoint under way; SQLite checkpoints the rest itself when the
        last connection closes."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._running = None
