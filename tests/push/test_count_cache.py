"""The unread counts /sync keeps per (user, room) (homeserver/sync/cache.py): moved
along with each push write instead of read again, and never kept when a count read
may have raced the write."""

from __future__ import annotations

from typing import Any

from homeserver.sync.cache import SyncCache
from storage.push_actions import Counts

ALICE = ("@alice:x", "!room:x")
BOB = ("@bob:x", "!room:x")


def _cache() -> SyncCache:
    hs: Any = None  # the count methods never reach the server
    return SyncCache(hs)


def _keep(cache: SyncCache, key: tuple[str, str], counts: dict[str, Counts]) -> None:
    cache.set_unread(*key, counts, 1, cache.receipt_generation(*key))


def test_kept_counts_move_with_each_write() -> None:
    cache = _cache()
    _keep(cache, ALICE, {"main": Counts(2, 0)})
    _keep(cache, BOB, {"main": Counts(5, 1), "$thread": Counts(1, 0)})
    kept = cache.counts_updating([ALICE, BOB])
    cache.counts_updated(kept, [("@alice:x", "!room:x", "main", True), ("@alice:x", "!room:x", "$t2", False)], [BOB])
    assert cache.unread(*ALICE) == ({"main": Counts(3, 1), "$t2": Counts(1, 0)}, 1)
    # Bob sent the event: everything before it is read.
    assert cache.unread(*BOB) == ({}, 1)


def test_counts_not_kept_are_left_to_the_next_read() -> None:
    cache = _cache()
    kept = cache.counts_updating([ALICE])
    cache.counts_updated(kept, [("@alice:x", "!room:x", "main", False)], [])
    assert cache.unread(*ALICE) is None


def test_a_read_racing_the_write_is_not_kept() -> None:
    cache = _cache()
    _keep(cache, ALICE, {"main": Counts(1, 0)})
    # A sync starts counting before the write and finishes during it.
    early = cache.receipt_generation(*ALICE)
    kept = cache.counts_updating([ALICE])
    cache.set_unread(*ALICE, {"main": Counts(1, 0)}, 2, early)
    assert cache.unread(*ALICE) == ({"main": Counts(1, 0)}, 1)
    # Another starts during the write and may have seen it committed: its count (2)
    # is kept by set_unread, but adding the write to it would count it twice.
    during = cache.receipt_generation(*ALICE)
    cache.set_unread(*ALICE, {"main": Counts(2, 0)}, 3, during)
    cache.counts_updated(kept, [("@alice:x", "!room:x", "main", False)], [])
    assert cache.unread(*ALICE) is None
    # And a count started before the write finished may not be kept after it.
    cache.set_unread(*ALICE, {"main": Counts(1, 0)}, 4, during)
    assert cache.unread(*ALICE) is None
