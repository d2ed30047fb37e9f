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
2. Once the WAL holds more than `RESTART_WAL_BYTES` (the frames step 1 reports),
   RESTART, under `Database`'s write lock: copies the few pages written during step
   1 and has the next writer start the WAL from its beginning. A writer only
   restarts the WAL by itself when everything in it has been copied back, which
   with checkpoints running beside busy writers is never the case: without this
   step the WAL grew by every commit, over a gigabyte in one benchmark run (a room
   message writes about seventeen pages). Holding our asyncio write lock (not
   SQLite's busy wait) makes the loop's writers wait their turn without blocking the
   loop; not doing it every time keeps those waits rare.

The WAL file keeps its size after a restart (up to `WAL_FILE_LIMIT`, our
connections' `journal_size_limit`), and the next writer writes over it from the
start. A lower limit had the first writer after each restart cut the file back (and
the writers after it grow it again): 6-10 ms on the loop's thread, twice a second
at full load, and the slowest deliveries of a benchmark run.

A commit stays as durable as before (WAL with synchronous=NORMAL: committed means in
the WAL, which survives kill -9).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

# About as many pages as SQLite's own threshold (1,000): a room message's two
# transactions write about seventeen between them.
EVERY_COMMITS = 100
RESTART_WAL_BYTES = 16 * 2**20
_FRAME_HEADER_BYTES = 24
# Room for the WAL to grow past RESTART_WAL_BYTES while a checkpoint runs.
WAL_FILE_LIMIT = 4 * RESTART_WAL_BYTES


class WalCheckpointer:
    def __init__(self, path: str, write_lock: asyncio.Lock) -> None:
        self._path = path
        self._write_lock = write_lock
        self._commits = 0
        self._running: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._frame_bytes = 0

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
            wal_bytes = await loop.run_in_executor(self._executor, self._run, "PASSIVE")
            if wal_bytes >= RESTART_WAL_BYTES:
                async with self._write_lock:
                    await loop.run_in_executor(self._executor, self._run, "RESTART")
        except Exception as exc:  # noqa: BLE001 - the next one tries again
            logger.warning("WAL checkpoint failed: %s", exc)
        finally:
            self._running = None

    def _run(self, mode: str) -> int:
        """Checkpoint; returns the bytes of the frames in the WAL (the file itself
        may be longer: it is not cut back when the WAL restarts)."""
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, timeout=5, check_same_thread=False, isolation_level=None)
            self._frame_bytes = int(self._conn.execute("PRAGMA page_size").fetchone()[0]) + _FRAME_HEADER_BYTES
        _busy, frames, _copied = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return max(frames, 0) * self._frame_bytes

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
