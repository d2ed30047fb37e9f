"""WAL checkpoints for the SQLite file, on a thread of their own.

In WAL mode each commit appends pages to the `-wal` file, and SQLite copies them back
into the database file (a checkpoint, with its fsyncs) when a commit finds the WAL
past 1,000 pages. That commit pays for it: with the SQLite calls on the event loop's
thread (storage/sqlite_inline.py), every hundredth or so write stalled the whole
server for about 8 ms. Our connections turn the automatic checkpoint off
(`wal_autocheckpoint=0`) and `Database` calls `committed()` after each commit; every
`EVERY_COMMITS` commits a checkpoint runs on this module's thread, with a connection
of its own:

1. PASSIVE, holding nothing: copies the WAL into the database file while writers go
   on (the sqlite3 module releases the GIL while it works).
2. Once the WAL file has grown past `RESTART_WAL_BYTES`, RESTART, under `Database`'s
   write lock: copies the few pages written during step 1 and has the next writer
   start the WAL from its beginning (and cut the file back to `journal_size_limit`).
   A writer only restarts the WAL by itself when everything in it has been copied
   back, which with checkpoints running beside busy writers is never the case:
   without this step the WAL grew by every commit, over a gigabyte in one benchmark
   run (a room message writes about 30 pages). Holding our asyncio write lock (not
   SQLite's busy wait) makes the loop's writers wait their turn without blocking
   the loop; not doing it every time keeps those waits rare.

A commit stays as durable as before (WAL with synchronous=NORMAL: committed means in
the WAL, which survives kill -9).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

# About as many pages as SQLite's own threshold: a room event's transaction writes
# roughly ten.
EVERY_COMMITS = 100
RESTART_WAL_BYTES = 16 * 2**20


class WalCheckpointer:
    def __init__(self, path: str, write_lock: asyncio.Lock) -> None:
        self._path = path
        self._write_lock = write_lock
        self._commits = 0
        self._running: asyncio.Task[None] | None = None
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
        self._running = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._run, "PASSIVE")
            if self._wal_bytes() >= RESTART_WAL_BYTES:
                async with self._write_lock:
                    await loop.run_in_executor(self._executor, self._run, "RESTART")
        except Exception as exc:  # noqa: BLE001 - the next one tries again
            logger.warning("WAL checkpoint failed: %s", exc)
        finally:
            self._running = None

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self._path + "-wal").st_size
        except OSError:
            return 0

    def _run(self, mode: str) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, timeout=5, check_same_thread=False, isolation_level=None)
        self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    async def close(self) -> None:
        """Let a checkpoint under way finish; SQLite checkpoints the rest itself when
        the last connection closes."""
        if self._running is not None:
            await asyncio.shield(self._running)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
