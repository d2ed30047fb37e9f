"""What /sync asks on every wake, kept in memory and updated by the writers:
a user's memberships, the newest event and membership change of each room, and a
user's ignored users. Loaded lazily; every entry is invalidated (or advanced) by the
same listeners that wake the notifier, with a version check so that a read racing a
write never caches the older answer."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from storage.push_actions import Counts
from storage.rooms import Membership

# A user's unread counts in a room, by thread, and the stream position they were read at.
KeptCounts = tuple[dict[str, Counts], int]

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

_MAX_USERS = 100_000
# (user, room) change counters kept for the unread counts before starting afresh.
_MAX_GENERATIONS = 1_000_000


class SyncCache:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._memberships: OrderedDict[str, list[Membership]] = OrderedDict()
        self._membership_version: dict[str, int] = {}
        self._ignored: OrderedDict[str, set[str]] = OrderedDict()
        self._ignored_version: dict[str, int] = {}
        self._room_last: dict[str, int] = {}
        self._room_member_change: dict[str, int] = {}
        # (user, room) -> (unread counts per thread, the room position counted at).
        # Valid until the user's push actions or read marks in the room change.
        self._unread: OrderedDict[tuple[str, str], KeptCounts] = OrderedDict()
        self._receipt_generation: dict[tuple[str, str], int] = {}
        self._unread_epoch = 0

    # --- writers ---------------------------------------------------------------------

    def event_persisted(self, room_id: str, stream_ordering: int, member_state_key: str | None) -> None:
        # Recorded even for a room not loaded yet: a load may be reading the database
        # right now, from before this event's commit, and its answer would otherwise
        # become the room's last position, hiding this event from every later sync.
        # (A newly persisted event is the room's newest: `max` keeps that true.)
        self._room_last[room_id] = max(self._room_last.get(room_id, 0), stream_ordering)
        if member_state_key is not None:
            self._room_member_change[room_id] = max(self._room_member_change.get(room_id, 0), stream_ordering)
            self.memberships_changed(member_state_key)

    def memberships_changed(self, user_id: str) -> None:
        self._membership_version[user_id] = self._membership_version.get(user_id, 0) + 1
        self._memberships.pop(user_id, None)

    def account_data_changed(self, user_id: str) -> None:
        self._ignored_version[user_id] = self._ignored_version.get(user_id, 0) + 1
        self._ignored.pop(user_id, None)

    def receipt_written(self, user_id: str, room_id: str) -> None:
        self.unread_changed([(user_id, room_id)])

    def unread_changed(self, pairs: list[tuple[str, str]]) -> None:
        """New push actions, a receipt or an own event for these (user, room)s."""
        self._bump_generations(pairs)
        for key in pairs:
            self._unread.pop(key, None)

    def _bump_generations(self, pairs: list[tuple[str, str]]) -> None:
        if len(self._receipt_generation) + len(pairs) > _MAX_GENERATIONS:
            # Bounded: start a new epoch, which no count read before it may store.
            self._unread_epoch += 1
            self._receipt_generation.clear()
            self._unread.clear()
        for key in pairs:
            self._receipt_generation[key] = self._receipt_generation.get(key, 0) + 1

    def counts_updating(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], KeptCounts | None]:
        """Called before writing new counts for these (user, room)s: counts being read
        now may not be kept. Returns the kept counts as they are, for `counts_updated`."""
        self._bump_generations(pairs)
        return {key: self._unread.get(key) for key in pairs}

    def counts_updated(
        self,
        before: dict[tuple[str, str], KeptCounts | None],
        added: list[tuple[str, str, str, bool]],
        zeroed: list[tuple[str, str]],
    ) -> None:
        """The counts of `counts_updating` are written: `added` notifications (user,
        room, thread, highlight) and `zeroed` (user, room)s (the user's own event).
        Kept counts move with them instead of being read again by the next sync,
        which every message to a room would otherwise cost each of its members.
        Counts kept since `counts_updating` were read while the write was under way
        (only possible where a commit awaits I/O) and may include it: dropped."""
        self._bump_generations(list(before))
        updated: dict[tuple[str, str], dict[str, Counts]] = {}
        for key, kept in before.items():
            current = self._unread.get(key)
            if current is None or current is not kept:
                self._unread.pop(key, None)
            else:
                updated[key] = {} if key in zeroed else dict(current[0])
        for user_id, room_id, thread, highlight in added:
            counts = updated.get((user_id, room_id))
            if counts is not None:
                old = counts.get(thread, Counts(0, 0))
                counts[thread] = Counts(old.notifications + 1, old.highlights + int(highlight))
        for key, counts in updated.items():
            self._unread[key] = (counts, self._unread[key][1])

    def receipt_generation(self, user_id: str, room_id: str) -> tuple[int, int]:
        return (self._unread_epoch, self._receipt_generation.get((user_id, room_id), 0))

    def unread(self, user_id: str, room_id: str) -> KeptCounts | None:
        return self._unread.get((user_id, room_id))

    def set_unread(
        self, user_id: str, room_id: str, counts: dict[str, Counts], position: int, generation: tuple[int, int]
    ) -> None:
        if self.receipt_generation(user_id, room_id) != generation:
            return  # counts changed while counting: count afresh next time
        self._unread[(user_id, room_id)] = (counts, position)
        self._unread.move_to_end((user_id, room_id))
        if len(self._unread) > _MAX_USERS:
            self._unread.popitem(last=False)

    # --- readers ---------------------------------------------------------------------

    async def memberships(self, user_id: str) -> list[Membership]:
        cached = self._memberships.get(user_id)
        if cached is not None:
            self._memberships.move_to_end(user_id)
            return cached
        version = self._membership_version.get(user_id, 0)
        found = await self.hs.sync_queries.memberships(user_id)
        if self._membership_version.get(user_id, 0) == version:
            self._memberships[user_id] = found
            if len(self._memberships) > _MAX_USERS:
                self._memberships.popitem(last=False)
        return found

    async def joined_room_ids(self, user_id: str) -> list[str]:
        return [m.room_id for m in await self.memberships(user_id) if m.membership == "join"]

    async def ignored_users(self, user_id: str) -> set[str]:
        cached = self._ignored.get(user_id)
        if cached is not None:
            return cached
        version = self._ignored_version.get(user_id, 0)
        found = await self.hs.room_reader.ignored_users(user_id)
        if self._ignored_version.get(user_id, 0) == version:
            self._ignored[user_id] = found
            if len(self._ignored) > _MAX_USERS:
                self._ignored.popitem(last=False)
        return found

    async def rooms_changed_since(self, room_ids: list[str], position: int) -> set[str]:
        """The rooms among `room_ids` with an event after `position`."""
        unknown = [r for r in room_ids if r not in self._room_last]
        if unknown:
            for room_id, last in (await self.hs.sync_queries.last_positions(unknown)).items():
                self._room_last[room_id] = max(self._room_last.get(room_id, 0), last)
        return {r for r in room_ids if self._room_last.get(r, 0) > position}

    async def membership_changed_since(self, room_ids: list[str], position: int) -> bool:
        unknown = [r for r in room_ids if r not in self._room_member_change]
        if unknown:
            for room_id, last in (await self.hs.sync_queries.last_membership_positions(unknown)).items():
                self._room_member_change[room_id] = max(self._room_member_change.get(room_id, 0), last)
        return any(self._room_member_change.get(r, 0) > position for r in room_ids)
