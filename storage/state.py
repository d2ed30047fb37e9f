"""Room state at each event, stored as state groups.

A group is either a snapshot (every state entry) or a delta on a parent group; deltas
chain up to `MAX_DELTA_DEPTH` before the next group is written as a snapshot, so a room
with 10,000 state changes stores neither 10,000 copies of its state nor chains that
take long to walk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, insert, select, text

from storage.database import Connection, Database
from storage.schema import state_group_entries, state_groups

StateKey = tuple[str, str]
MAX_DELTA_DEPTH = 50
_CACHE_SIZE = 1_000

_CHAIN = text(
    """
    WITH RECURSIVE chain(id, prev_group) AS (
        SELECT id, prev_group FROM state_groups WHERE id = :group
        UNION ALL
        SELECT g.id, g.prev_group FROM state_groups g JOIN chain c ON g.id = c.prev_group
    )
    SELECT e.group_id, e.type, e.state_key, e.event_id
    FROM state_group_entries e
    WHERE e.group_id IN (SELECT id FROM chain)
    ORDER BY e.group_id
    """
)


_GROUP_DEPTH = select(state_groups.c.delta_depth).where(state_groups.c.id == bindparam("id"))
_INSERT_GROUP = (
    insert(state_groups)
    .values(room_id=bindparam("room_id"), prev_group=bindparam("prev_group"), delta_depth=bindparam("delta_depth"))
    .returning(state_groups.c.id)
)
_INSERT_ENTRY = insert(state_group_entries).values(
    group_id=bindparam("group_id"), type=bindparam("type"), state_key=bindparam("state_key"), event_id=bindparam("event_id")
)


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[int, dict[StateKey, str]] = OrderedDict()

    async def store_group(
        self,
        conn: Connection | Any,
        room_id: str,
        prev_group: int | None,
        delta: Mapping[StateKey, str],
        full_state: Mapping[StateKey, str],
    ) -> int:
        """Write the group for `full_state` (= prev_group's state + delta); return its ID.

        Runs inside the caller's transaction (from `Database.write()` or
        `write_prebuilt()`); the caller calls `remember` after commit.
        """
        # Prebuilt statements through db.run: every state event writes a group.
        db = self.db
        depth = 0
        if prev_group is not None:
            rows = await db.run(conn, _GROUP_DEPTH, {"id": prev_group})
            depth = int(rows[0][0]) + 1 if rows else MAX_DELTA_DEPTH
        snapshot = prev_group is None or depth >= MAX_DELTA_DEPTH
        rows = await db.run(
            conn,
            _INSERT_GROUP,
            {"room_id": room_id, "prev_group": None if snapshot else prev_group, "delta_depth": 0 if snapshot else depth},
        )
        group = int(rows[0][0])
        entries = full_state if snapshot else delta
        if entries:
            await db.run(
                conn,
                _INSERT_ENTRY,
                [{"group_id": group, "type": t, "state_key": k, "event_id": e} for (t, k), e in entries.items()],
            )
        return group

    def remember(self, group: int, state: Mapping[StateKey, str]) -> None:
        """Cache a group's state; only once the transaction that wrote it committed."""
        self._cache[group] = dict(state)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    def _remember(self, group: int, state: dict[StateKey, str]) -> None:
        self._cache[group] = state
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def get_state_ids(self, group: int) -> dict[StateKey, str]:
        cached = self._cache.get(group)
        if cached is not None:
            self._cache.move_to_end(group)
            return dict(cached)
        async with self.db.read() as conn:
            rows = await conn.execute(_CHAIN, {"group": group})
            state: dict[StateKey, str] = {}
            # Ascending group IDs run from the snapshot to the newest delta, so later
            # entries override earlier ones.
            for row in rows:
                state[(row.type, row.state_key)] = row.event_id
        self._remember(group, state)
        return dict(state)
