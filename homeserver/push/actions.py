"""Push rule evaluation on the send path (spec: Client-Server API, "Push
Notifications", "Receiving notifications").

`PushActions.on_event` is a `RoomEvents` listener, registered before the sync
listener: for every new room event (local or received over federation) it evaluates
the push rules of each joined local member but the sender (and of a local invitee),
and writes the resulting actions for all of them in one transaction. So when the
sync listener wakes the long-polls, the counts they read are already there. Then it
hands the notifying rows to the pusher service, which delivers in the background.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from homeserver.events import user_power_level_in_state
from homeserver.push.members import RoomMembers
from storage.events import StoredEvent
from storage.push_actions import (
    MAIN_THREAD,
    READ_RECEIPT_TYPES,
    ActionRow,
    PushActionStore,
)

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer
    from homeserver.sync.cache import KeptCounts

logger = logging.getLogger(__name__)

POWER_LEVELS_KEY = ("m.room.power_levels", "")
MAX_IGNORED_USERS = 100_000


def thread_of(content: dict[str, Any]) -> str:
    """The thread an event belongs to: its thread root, or 'main'."""
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str) and root:
            return root
    return MAIN_THREAD


def notification_levels(power_levels: dict[str, Any] | None) -> dict[str, int]:
    levels: dict[str, int] = {"room": 50}
    content = power_levels.get("content") if power_levels else None
    notifications = content.get("notifications") if isinstance(content, dict) else None
    if isinstance(notifications, dict):
        for key, value in notifications.items():
            if isinstance(value, int) and not isinstance(value, bool):
                levels[key] = value
            elif isinstance(value, str) and value.lstrip("-").isdigit():
                levels[key] = int(value)
    return levels


def _may_have_unread(kept: KeptCounts | None) -> bool:
    """Whether counts kept by the sync cache (None: not kept) may be above zero."""
    if kept is None:
        return True
    counts, _position = kept
    return any(c.notifications or c.highlights for c in counts.values())


class PushActions:
    def __init__(self, hs: HomeServer, store: PushActionStore) -> None:
        self.hs = hs
        self.store = store
        self.members = RoomMembers(hs)
        self._ignored: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._ignored_version: dict[str, int] = {}

    # --- listeners -------------------------------------------------------------------

    async def on_account_data(self, user_id: str, _position: int) -> None:
        self.forget(user_id)

    def forget(self, user_id: str) -> None:
        """Drop the user's cached ignore list."""
        self._ignored_version[user_id] = self._ignored_version.get(user_id, 0) + 1
        self._ignored.pop(user_id, None)

    async def receipt_moved(self, user_id: str, room_id: str, receipt_type: str, thread_id: str) -> None:
        """A read receipt was stored: recount the user's unread counts in the room."""
        if receipt_type in READ_RECEIPT_TYPES and self.hs.is_local_user(user_id):
            await self.store.recount(user_id, room_id, thread_id)
            self.hs.pusher.counts_changed(user_id)

    async def on_event(self, event: StoredEvent) -> None:
        if event.outlier or event.rejected_reason:
            return
        if event.type == "m.room.member":
            await self.members.member_event(event)
        try:
            await self._evaluate(event)
        except Exception:
            # A broken rule or an odd event must never fail the send that triggered it.
            logger.exception("Push evaluation failed for %s", event.event_id)

    # --- evaluation ------------------------------------------------------------------

    async def _ignored_by(self, user_ids: list[str]) -> dict[str, frozenset[str]]:
        found: dict[str, frozenset[str]] = {}
        missing: list[str] = []
        for user_id in user_ids:
            cached = self._ignored.get(user_id)
            if cached is None:
                missing.append(user_id)
            else:
                found[user_id] = cached
        if missing:
            versions = {u: self._ignored_version.get(u, 0) for u in missing}
            loaded = await self.store.ignored_users(missing)
            for user_id, ignored in loaded.items():
                found[user_id] = ignored
                if self._ignored_version.get(user_id, 0) == versions[user_id]:
                    self._ignored[user_id] = ignored
            while len(self._ignored) > MAX_IGNORED_USERS:
                self._ignored.popitem(last=False)
        return found

    async def _evaluate(self, event: StoredEvent) -> None:
        hs = self.hs
        room_id, sender = event.room_id, event.sender
        members = await self.members.joined(room_id)
        candidates = [u for u in members if u != sender and hs.is_local_user(u)]
        target = event.state_key if event.type == "m.room.member" else None
        if (
            target is not None
            and target != sender
            and target not in members
            and event.content.get("membership") == "invite"
            and hs.is_local_user(target)
        ):
            candidates.append(target)  # .m.rule.invite_for_me
        own = (sender, room_id, event.stream_ordering) if hs.is_local_user(sender) else None
        rows: list[ActionRow] = []
        if candidates:
            rows = await self._rows(event, members, candidates)
        pairs = [(r.user_id, room_id) for r in rows]
        if own is not None:
            pairs.append((sender, room_id))
        kept = hs.sync_cache.counts_updating(pairs)
        try:
            await self.store.record(rows, own)
        except BaseException:
            hs.sync_cache.unread_changed(pairs)
            raise
        hs.sync_cache.counts_updated(
            kept,
            [(r.user_id, room_id, r.thread_id, r.highlight) for r in rows if r.notify],
            [(sender, room_id)] if own is not None else [],
        )
        notifying = [r for r in rows if r.notify]
        if notifying:
            hs.pusher.actions_written(notifying)
        if own is not None and _may_have_unread(kept.get((sender, room_id))):
            # Sending read the room: the sender's phone badge may drop.
            hs.pusher.counts_changed(sender)

    async def _rows(self, event: StoredEvent, members: dict[str, str | None], candidates: list[str]) -> list[ActionRow]:
        # Imported here: homeserver/push/evaluator.py belongs to the push rules module.
        from homeserver.push.evaluator import (
            PushEvent,
            actions_for,
            is_highlight,
            should_notify,
        )

        hs = self.hs
        room_id, sender = event.room_id, event.sender
        head = await hs.room_events.head(room_id)
        auth_state = await hs.room_events.auth_state(head, [POWER_LEVELS_KEY])
        push_event = PushEvent(
            event.pdu,
            member_count=len(members),
            sender_power_level=user_power_level_in_state(head.room_version, sender, auth_state),
            notification_levels=notification_levels(auth_state.get(POWER_LEVELS_KEY)),
        )
        rulesets = await hs.push_rules.rules_for_users(candidates)
        ignored = await self._ignored_by(candidates)
        thread_id = thread_of(event.content)
        now_ms = int(time.time() * 1000)
        rows: list[ActionRow] = []
        # The evaluator returns the matching rule's own (shared, never mutated) list:
        # most members share a handful of them, so their flags are worked out once.
        flags: dict[int, tuple[bool, bool]] = {}
        for user_id in candidates:
            if sender in ignored.get(user_id, frozenset()):
                continue
            ruleset = rulesets.get(user_id)
            if ruleset is None:
                continue
            actions = actions_for(ruleset, push_event, user_id, members.get(user_id))
            if not actions:
                continue
            known = flags.get(id(actions))
            if known is None:
                known = flags[id(actions)] = (bool(should_notify(actions)), bool(is_highlight(actions)))
            notify, highlight = known
            if not notify and not highlight:
                continue
            rows.append(
                ActionRow(
                    user_id, room_id, event.stream_ordering, event.event_id, thread_id, actions, notify, highlight, now_ms
                )
            )
        return rows
