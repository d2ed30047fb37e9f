"""Reading rooms: every path that serves events to a client goes through here, so
history visibility and ignored users are enforced in one place.

Visibility (spec: "History visibility") is decided per event from the state after
it: world_readable events are visible to all; otherwise the user must have been joined
at the event, or invited for `invited`, or be joined now for `shared`. A user always
sees their own membership events.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import RoomVersion
from homeserver.rooms.client_format import client_event
from homeserver.rooms.events import RoomEvents
from storage.account_data import AccountDataStore
from storage.events import EventStore, StoredEvent
from storage.rooms import RoomStore
from storage.state import StateKey, StateStore

IGNORED_USERS = "m.ignored_user_list"
# Redactions are idempotent per (device, txnId) like sends, in their own namespace:
# stored with this prefix, served without it.
REDACT_TXN_PREFIX = "redact:"


def client_txn_id(event: StoredEvent, stored: str | None) -> str | None:
    if stored is not None and event.type == "m.room.redaction" and stored.startswith(REDACT_TXN_PREFIX):
        return stored[len(REDACT_TXN_PREFIX) :]
    return stored


class Reader(msgspec.Struct, frozen=True):
    user_id: str
    device_id: str | None


def stream_token(position: int) -> str:
    return f"s{position}"


def parse_stream_token(token: str) -> int:
    """A pagination token to a stream position; bad tokens are 400 M_INVALID_PARAM."""
    # Sync tokens carry the room stream position first (see homeserver.sync).
    head = token.split("_", 1)[0]
    # Backfilled history sits at negative positions (see federation/backfill.py).
    digits = head[2:] if head.startswith("s-") else head[1:]
    # isdigit() alone admits other scripts' digits; positions are ASCII and fit the
    # database's 64-bit integers.
    if head.startswith("s") and digits.isascii() and digits.isdigit() and len(digits) <= 18:
        return int(head[1:])
    raise MatrixError(400, "M_INVALID_PARAM", f"Invalid pagination token {token[:100]!r}")


HISTORY_VISIBILITIES = ("world_readable", "shared", "invited", "joined")


def _history_value(value: Any) -> str:
    # No setting, or one we do not understand, is `shared`.
    return value if value in HISTORY_VISIBILITIES else "shared"


def _prev_content(event: StoredEvent) -> dict[str, Any] | None:
    """The content of the state event this one replaced, None if it replaced none."""
    unsigned = event.pdu.get("unsigned")
    if not isinstance(unsigned, dict) or "replaces_state" not in unsigned:
        return None
    prev = unsigned.get("prev_content")
    return prev if isinstance(prev, dict) else {}


def _filter_kwargs(event_filter: dict[str, Any]) -> dict[str, Any]:
    """A RoomEventFilter as EventStore.room_events arguments."""
    return dict(
        types=event_filter.get("types"),
        not_types=event_filter.get("not_types"),
        senders=event_filter.get("senders"),
        not_senders=event_filter.get("not_senders"),
        contains_url=event_filter.get("contains_url"),
    )


def _replaces_state(event: StoredEvent) -> str | None:
    unsigned = event.pdu.get("unsigned")
    if event.state_key is None or not isinstance(unsigned, dict):
        return None
    value = unsigned.get("replaces_state")
    return value if isinstance(value, str) else None


def _allowed(history: str, membership: str | None, joined_after: bool) -> bool:
    return (
        history == "world_readable"
        or membership == "join"
        or (history == "shared" and joined_after)
        or (history == "invited" and membership == "invite")
    )


class RoomReader:
    def __init__(
        self, room_events: RoomEvents, events: EventStore, state: StateStore, rooms: RoomStore, account_data: AccountDataStore
    ) -> None:
        self.room_events = room_events
        self.events = events
        # Not `self.state`: that is the GET /state read below.
        self.state_store = state
        self.rooms = rooms
        self.account_data = account_data
        # Set when federation is on: fetches history older than what we hold
        # (room_id, how many events are wanted) -> whether any were added.
        self.backfill: Callable[[str, int], Awaitable[bool]] | None = None

    # --- access --------------------------------------------------------------------

    async def room_version(self, room_id: str) -> RoomVersion:
        return (await self.room_events.head(room_id)).room_version

    async def require_member_or_readable(self, user_id: str, room_id: str) -> str | None:
        """The user's membership, if they may read the room at all; else 403.

        Rooms the user never joined are readable only when world_readable.
        """
        head = await self.room_events.head(room_id)
        membership = await self.rooms.get_membership(room_id, user_id)
        if membership is not None and membership.membership in ("join", "leave", "ban", "invite"):
            if membership.membership != "invite" or await self._visibility_now(head.state_ids) in (
                "invited",
                "world_readable",
            ):
                return membership.membership
        if await self._visibility_now(head.state_ids) == "world_readable":
            return membership.membership if membership else None
        raise forbidden("You are not allowed to read this room")

    async def _visibility_now(self, state_ids: dict[StateKey, str]) -> str:
        event_id = state_ids.get(("m.room.history_visibility", ""))
        event = await self.events.get_event(event_id) if event_id else None
        return _history_value(event.content.get("history_visibility")) if event else "shared"

    async def ignored_users(self, user_id: str) -> set[str]:
        content = await self.account_data.get(user_id, IGNORED_USERS)
        ignored = content.get("ignored_users") if content else None
        return set(ignored) if isinstance(ignored, dict) else set()

    async def filter_visible(
        self,
        user_id: str,
        room_id: str,
        events: list[StoredEvent],
        *,
        ignored: set[str] | None = None,
        groups: dict[str, int] | None = None,
        last_join: int | None = None,
    ) -> list[StoredEvent]:
        """The events the user may see (spec: "History visibility", server behaviour).

        Decided per event from the state *before* it (the state in which it was
        sent): world_readable allows; so does the user's membership `join`; `shared`
        allows if the user joined at any point after the event; `invited` allows an
        invited user. A m.room.history_visibility event is visible if the setting
        before *or* after it allows it, and so is the user's own member event if
        their membership before or after it does. Non-state events of ignored users
        are left out.

        A caller that knows some of the inputs already (/sync, building many rooms
        at once) passes them: the ignored users, the events' state groups (a dict
        with some of them), the user's latest join position in the room.
        """
        if not events:
            return []
        if ignored is None:
            ignored = await self.ignored_users(user_id)
        known = groups or {}
        missing = [e.event_id for e in events if e.event_id not in known]
        groups = {**known, **await self.events.get_state_groups_of(missing)} if missing else known
        last_join_known = last_join is not None
        visible: list[StoredEvent] = []
        cache: dict[int, tuple[str, str | None]] = {}
        for event in events:
            if event.sender in ignored and event.state_key is None:
                continue
            group = groups.get(event.event_id)
            if group is None or event.rejected_reason or event.outlier:
                continue
            if group not in cache:
                cache[group] = await self._visibility_at(group, user_id)
            # The group is the state after the event; for a state event the state
            # before it differs only in the event's own key.
            history_after, membership_after = cache[group]
            history_before, membership_before = history_after, membership_after
            is_history = event.type == "m.room.history_visibility" and event.state_key == ""
            is_own_member = event.type == "m.room.member" and event.state_key == user_id
            if is_history or is_own_member:
                prev = _prev_content(event)
                if is_history:
                    value = prev.get("history_visibility") if prev is not None else None
                    history_before = _history_value(value)
                else:
                    membership_before = prev.get("membership") if prev is not None else None
            candidates = [(history_before, membership_before)]
            if is_history:
                candidates.append((history_after, membership_before))
            if is_own_member:
                candidates.append((history_before, membership_after))
            if any(history == "shared" for history, _ in candidates) and not last_join_known:
                last_join = await self.events.last_membership_position(room_id, user_id, "join")
                last_join_known = True
            joined_after = last_join is not None and last_join >= event.stream_ordering
            if any(_allowed(history, membership, joined_after) for history, membership in candidates):
                visible.append(event)
        return visible

    async def _visibility_at(self, group: int, user_id: str) -> tuple[str, str | None]:
        state = await self.state_store.get_state_ids(group)
        wanted = [i for i in (state.get(("m.room.history_visibility", "")), state.get(("m.room.member", user_id))) if i]
        found = await self.events.get_events(wanted)
        history_id = state.get(("m.room.history_visibility", ""))
        member_id = state.get(("m.room.member", user_id))
        history = found[history_id].content.get("history_visibility") if history_id in found else None
        membership = found[member_id].content.get("membership") if member_id in found else None
        return _history_value(history), membership

    # --- serialising ---------------------------------------------------------------

    async def serialize(
        self, reader: Reader, events: Iterable[StoredEvent], *, include_room_id: bool = True
    ) -> list[dict[str, Any]]:
        events = list(events)
        if not events:
            return []
        now_ms = int(time.time() * 1000)
        # Most pages have no redacted, state or own events: no lookups then (a wave of
        # woken long-polls serialises the same new message thousands of times).
        redacted_by = [e.redacted_by for e in events if e.redacted_by]
        redactions = await self.events.get_events(redacted_by) if redacted_by else {}
        # prev_content is read from the replaced event itself, so a redaction of that
        # event since is honoured.
        replaced_ids = [r for r in map(_replaces_state, events) if r is not None]
        replaced = await self.events.get_events(replaced_ids) if replaced_ids else {}
        own = [e.event_id for e in events if e.sender == reader.user_id] if reader.device_id else []
        txn_ids = await self.events.txn_ids_for(reader.user_id, reader.device_id, own) if own and reader.device_id else {}
        versions: dict[str, RoomVersion] = {}
        out = []
        for event in events:
            room_id = event.room_id
            if room_id not in versions:
                versions[room_id] = await self.room_version(room_id)
            out.append(
                client_event(
                    event,
                    versions[room_id],
                    now_ms,
                    redaction=redactions.get(event.redacted_by) if event.redacted_by else None,
                    transaction_id=client_txn_id(event, txn_ids.get(event.event_id)),
                    include_room_id=include_room_id,
                    prev_event=replaced.get(_replaces_state(event) or ""),
                )
            )
        return out

    # --- reads ---------------------------------------------------------------------

    async def event(self, reader: Reader, room_id: str, event_id: str) -> dict[str, Any]:
        await self.require_member_or_readable(reader.user_id, room_id)
        event = await self.events.get_event(event_id)
        if event is None or event.room_id != room_id or event.rejected_reason or event.outlier:
            raise not_found("Event not found")
        if not await self.filter_visible(reader.user_id, room_id, [event]):
            raise not_found("Event not found")
        return (await self.serialize(reader, [event]))[0]

    async def state_ids_for_reader(self, user_id: str, room_id: str) -> dict[StateKey, str]:
        """Current state for members; the state when they left for former members."""
        membership = await self.require_member_or_readable(user_id, room_id)
        if membership in ("leave", "ban"):
            member = await self.rooms.get_membership(room_id, user_id)
            assert member is not None
            group = (await self.events.get_state_groups_of([member.event_id])).get(member.event_id)
            if group is not None:
                return await self.state_store.get_state_ids(group)
        return dict((await self.room_events.head(room_id)).state_ids)

    async def state(self, reader: Reader, room_id: str) -> list[dict[str, Any]]:
        state_ids = await self.state_ids_for_reader(reader.user_id, room_id)
        found = await self.events.get_events(state_ids.values())
        return await self.serialize(reader, [found[i] for i in state_ids.values() if i in found])

    async def state_event(self, reader: Reader, room_id: str, event_type: str, state_key: str) -> StoredEvent:
        state_ids = await self.state_ids_for_reader(reader.user_id, room_id)
        event_id = state_ids.get((event_type, state_key))
        event = await self.events.get_event(event_id) if event_id else None
        if event is None:
            raise not_found("State event not found")
        return event

    async def member_state_ids(self, user_id: str, room_id: str, at_token: str | None) -> dict[StateKey, str]:
        """The state /members reads: at `at_token` if given, never later than a former
        member's leave."""
        if at_token is None:
            return await self.state_ids_for_reader(user_id, room_id)
        position = parse_stream_token(at_token)
        membership = await self.require_member_or_readable(user_id, room_id)
        if membership in ("leave", "ban"):
            member = await self.rooms.get_membership(room_id, user_id)
            if member is not None:
                position = min(position, member.stream_ordering)
        return await self.state_ids_at(room_id, position)

    async def state_ids_at(self, room_id: str, position: int) -> dict[StateKey, str]:
        event_id = await self.events.last_event_at_or_before(room_id, position)
        if event_id is None:
            return {}
        group = (await self.events.get_state_groups_of([event_id])).get(event_id)
        return await self.state_store.get_state_ids(group) if group is not None else {}

    async def messages(
        self,
        reader: Reader,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        backwards: bool,
        limit: int,
        event_filter: dict[str, Any],
    ) -> dict[str, Any]:
        membership = await self.require_member_or_readable(reader.user_id, room_id)
        if from_token is not None:
            start = parse_stream_token(from_token)
        else:
            # Forwards from the very start: below any backfilled history too.
            start = await self.events.max_stream_ordering() if backwards else min(0, await self.events.min_stream_ordering() - 1)
        end_bound = parse_stream_token(to_token) if to_token is not None else None
        # Former members read up to the moment they left, no further.
        if membership in ("leave", "ban"):
            member = await self.rooms.get_membership(room_id, reader.user_id)
            if member is not None:
                start = min(start, member.stream_ordering) if backwards else start
                end_bound = member.stream_ordering if not backwards and end_bound is None else end_bound
        kwargs = _filter_kwargs(event_filter)
        if backwards:
            page = await self.events.room_events(
                room_id, before=start + 1, after=end_bound, backwards=True, limit=limit, **kwargs
            )
            # The page reached the oldest event we hold: older history may be on the
            # servers that were in the room before us. A few rounds at most, each one
            # batch of /backfill.
            rounds = 0
            while self.backfill is not None and end_bound is None and len(page) < limit and rounds < 5:
                rounds += 1
                if not await self.backfill(room_id, limit - len(page)):
                    break
                page = await self.events.room_events(
                    room_id, before=start + 1, after=end_bound, backwards=True, limit=limit, **kwargs
                )
        else:
            before = end_bound + 1 if end_bound is not None else None
            page = await self.events.room_events(room_id, after=start, before=before, backwards=False, limit=limit, **kwargs)
        visible = await self.filter_visible(reader.user_id, room_id, page)
        response: dict[str, Any] = {
            "start": stream_token(start),
            "chunk": await self.serialize(reader, visible),
        }
        if page and len(page) == limit:
            last = page[-1].stream_ordering
            response["end"] = stream_token(last - 1 if backwards else last)
        elif limit == 0:
            # Nothing asked for, nothing served: the next page starts where this one did.
            response["end"] = stream_token(start)
        if event_filter.get("lazy_load_members") and visible:
            response["state"] = await self._member_state_for(reader, room_id, visible)
        return response

    async def _member_state_for(self, reader: Reader, room_id: str, events: list[StoredEvent]) -> list[dict[str, Any]]:
        state_ids = (await self.room_events.head(room_id)).state_ids
        senders = {e.sender for e in events}
        ids = [state_ids[("m.room.member", s)] for s in senders if ("m.room.member", s) in state_ids]
        found = await self.events.get_events(ids)
        return await self.serialize(reader, found.values())

    async def context(
        self, reader: Reader, room_id: str, event_id: str, limit: int, *, event_filter: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        kwargs = _filter_kwargs(event_filter or {})
        await self.require_member_or_readable(reader.user_id, room_id)
        event = await self.events.get_event(event_id)
        if event is None or event.room_id != room_id or not await self.filter_visible(reader.user_id, room_id, [event]):
            raise not_found("Event not found")
        before_count = limit // 2
        after_count = limit - before_count
        before = await self.events.room_events(
            room_id, before=event.stream_ordering, backwards=True, limit=before_count, **kwargs
        )
        after = await self.events.room_events(
            room_id, after=event.stream_ordering, backwards=False, limit=after_count, **kwargs
        )
        before_visible = await self.filter_visible(reader.user_id, room_id, before)
        after_visible = await self.filter_visible(reader.user_id, room_id, after)
        start = (before[-1].stream_ordering - 1) if before else event.stream_ordering - 1
        end = after[-1].stream_ordering if after else event.stream_ordering
        # Spec: "The state of the room at the last event returned."
        last = after_visible[-1] if after_visible else event
        group = (await self.events.get_state_groups_of([last.event_id])).get(last.event_id)
        state_ids = await self.state_store.get_state_ids(group) if group is not None else {}
        state_events = await self.events.get_events(state_ids.values())
        return {
            "event": (await self.serialize(reader, [event]))[0],
            "events_before": await self.serialize(reader, before_visible),
            "events_after": await self.serialize(reader, after_visible),
            "start": stream_token(start),
            "end": stream_token(end),
            "state": await self.serialize(reader, state_events.values()),
        }

    async def relations(
        self,
        reader: Reader,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        to_token: str | None,
        backwards: bool,
        limit: int,
    ) -> dict[str, Any]:
        await self.require_member_or_readable(reader.user_id, room_id)
        parent = await self.events.get_event(parent_id)
        if parent is None or parent.room_id != room_id or not await self.filter_visible(reader.user_id, room_id, [parent]):
            raise not_found("Event not found")
        position = parse_stream_token(from_token) if from_token else None
        bound = parse_stream_token(to_token) if to_token else None
        found = await self.events.relations(
            parent_id,
            room_id=room_id,
            rel_type=rel_type,
            before=(position + 1 if position is not None else None) if backwards else bound,
            after=bound if backwards else position,
            backwards=backwards,
            limit=limit,
        )
        page = found
        if event_type is not None:
            found = [e for e in found if e.type == event_type]
        visible = await self.filter_visible(reader.user_id, room_id, found)
        response: dict[str, Any] = {"chunk": await self.serialize(reader, visible)}
        if page and len(page) == limit:
            last = page[-1].stream_ordering
            response["next_batch"] = stream_token(last - 1 if backwards else last)
        if from_token:
            response["prev_batch"] = from_token
        return response

    async def threads(
        self, reader: Reader, room_id: str, *, participated_only: bool, from_token: str | None, limit: int
    ) -> dict[str, Any]:
        await self.require_member_or_readable(reader.user_id, room_id)
        before = parse_stream_token(from_token) + 1 if from_token else None
        roots = await self.events.thread_roots(room_id, before=before, limit=limit)
        found = await self.events.get_events([r for r, _ in roots])
        # A thread reply may name a root in another room; such roots are not this room's.
        chunk_events = [found[r] for r, _ in roots if r in found and found[r].room_id == room_id]
        if participated_only:
            chunk_events = [e for e in chunk_events if await self._participated(reader.user_id, e)]
        visible = await self.filter_visible(reader.user_id, room_id, chunk_events)
        chunk = await self.serialize(reader, visible)
        for item in chunk:
            item["unsigned"].setdefault("m.relations", {})["m.thread"] = await self.thread_summary(
                reader, room_id, item["event_id"]
            )
        response: dict[str, Any] = {"chunk": chunk}
        if roots and len(roots) == limit:
            response["next_batch"] = stream_token(roots[-1][1] - 1)
        return response

    async def _participated(self, user_id: str, root: StoredEvent) -> bool:
        if root.sender == user_id:
            return True
        replies = await self.events.relations(
            root.event_id, room_id=root.room_id, rel_type="m.thread", before=None, after=None, backwards=True, limit=1000
        )
        return any(reply.sender == user_id for reply in replies)

    async def _root_sender(self, root_id: str) -> str | None:
        root = await self.events.get_event(root_id)
        return root.sender if root else None

    async def thread_summary(self, reader: Reader, room_id: str, root_id: str) -> dict[str, Any]:
        replies = await self.events.relations(
            root_id, room_id=room_id, rel_type="m.thread", before=None, after=None, backwards=True, limit=1000
        )
        visible = await self.filter_visible(reader.user_id, room_id, replies)
        latest = (await self.serialize(reader, visible[:1]))[0] if visible else None
        summary: dict[str, Any] = {
            "count": len(visible),
            # Spec "Server-side aggregation of m.thread relationships": the root's
            # sender or the sender of a reply.
            "current_user_participated": any(r.sender == reader.user_id for r in visible)
            or await self._root_sender(root_id) == reader.user_id,
        }
        if latest is not None:
            summary["latest_event"] = latest
        return summary
