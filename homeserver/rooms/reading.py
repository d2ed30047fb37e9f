"""Reading rooms: every path that serves events to a client goes through here, so
history visibility and ignored users are enforced in one place.

Visibility (spec: "History visibility") is decided per event from the state after
it: world_readable events are visible to all; otherwise the user must have been joined
at the event, or invited for `invited`, or be joined now for `shared`. A user always
sees their own membership events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import RoomVersion
from homeserver.rooms.client_format import client_event
from homeserver.rooms.events import RoomEvents
from storage.account_data import AccountDataStore
from storage.events import EventStore, StoredEvent
from storage.rooms import RoomStore
from storage.state import StateKey, StateStore

IGNORED_USERS = "m.ignored_user_list"


@dataclass(frozen=True)
class Reader:
    user_id: str
    device_id: str | None


def stream_token(position: int) -> str:
    return f"s{position}"


def parse_stream_token(token: str) -> int:
    """A pagination token to a stream position; bad tokens are 400 M_INVALID_PARAM."""
    if token.startswith("s") and token[1:].isdigit():
        return int(token[1:])
    # Sync tokens carry the room stream position first (see homeserver.sync).
    head = token.split("_", 1)[0]
    if head.startswith("s") and head[1:].isdigit():
        return int(head[1:])
    raise MatrixError(400, "M_INVALID_PARAM", f"Invalid pagination token {token!r}")


class RoomReader:
    def __init__(
        self, room_events: RoomEvents, events: EventStore, state: StateStore, rooms: RoomStore, account_data: AccountDataStore
    ) -> None:
        self.room_events = room_events
        self.events = events
        self.state = state
        self.rooms = rooms
        self.account_data = account_data

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
        return str(event.content.get("history_visibility", "shared")) if event else "shared"

    async def ignored_users(self, user_id: str) -> set[str]:
        content = await self.account_data.get(user_id, IGNORED_USERS)
        ignored = content.get("ignored_users") if content else None
        return set(ignored) if isinstance(ignored, dict) else set()

    async def filter_visible(self, user_id: str, room_id: str, events: list[StoredEvent]) -> list[StoredEvent]:
        if not events:
            return []
        ignored = await self.ignored_users(user_id)
        groups = await self.events.get_state_groups_of([e.event_id for e in events])
        membership_now = await self.rooms.get_membership(room_id, user_id)
        joined_now = membership_now is not None and membership_now.membership == "join"
        visible: list[StoredEvent] = []
        cache: dict[int, tuple[str, str | None]] = {}
        for event in events:
            if event.sender in ignored and event.state_key is None:
                continue
            if event.type == "m.room.member" and event.state_key == user_id:
                visible.append(event)
                continue
            group = groups.get(event.event_id)
            if group is None:
                continue
            if group not in cache:
                cache[group] = await self._visibility_at(group, user_id)
            history, membership = cache[group]
            if (
                history == "world_readable"
                or membership == "join"
                or (history == "shared" and joined_now)
                or (history == "invited" and membership == "invite")
            ):
                visible.append(event)
        return visible

    async def _visibility_at(self, group: int, user_id: str) -> tuple[str, str | None]:
        state = await self.state.get_state_ids(group)
        wanted = [i for i in (state.get(("m.room.history_visibility", "")), state.get(("m.room.member", user_id))) if i]
        found = await self.events.get_events(wanted)
        history_id = state.get(("m.room.history_visibility", ""))
        member_id = state.get(("m.room.member", user_id))
        history = found[history_id].content.get("history_visibility", "shared") if history_id in found else "shared"
        membership = found[member_id].content.get("membership") if member_id in found else None
        return str(history), membership

    # --- serialising ---------------------------------------------------------------

    async def serialize(
        self, reader: Reader, events: Iterable[StoredEvent], *, include_room_id: bool = True
    ) -> list[dict[str, Any]]:
        events = list(events)
        if not events:
            return []
        now_ms = int(time.time() * 1000)
        redactions = await self.events.get_events([e.redacted_by for e in events if e.redacted_by])
        txn_ids = (
            await self.events.txn_ids_for(reader.user_id, reader.device_id, [e.event_id for e in events if e.sender == reader.user_id])
            if reader.device_id
            else {}
        )
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
                    transaction_id=txn_ids.get(event.event_id),
                    include_room_id=include_room_id,
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
                return await self.state.get_state_ids(group)
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

    async def state_ids_at(self, room_id: str, position: int) -> dict[StateKey, str]:
        event_id = await self.events.last_event_at_or_before(room_id, position)
        if event_id is None:
            return {}
        group = (await self.events.get_state_groups_of([event_id])).get(event_id)
        return await self.state.get_state_ids(group) if group is not None else {}

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
            start = await self.events.max_stream_ordering() if backwards else 0
        end_bound = parse_stream_token(to_token) if to_token is not None else None
        # Former members read up to the moment they left, no further.
        if membership in ("leave", "ban"):
            member = await self.rooms.get_membership(room_id, reader.user_id)
            if member is not None:
                start = min(start, member.stream_ordering) if backwards else start
                end_bound = member.stream_ordering if not backwards and end_bound is None else end_bound
        kwargs = dict(
            types=event_filter.get("types"),
            not_types=event_filter.get("not_types"),
            senders=event_filter.get("senders"),
            not_senders=event_filter.get("not_senders"),
            contains_url=event_filter.get("contains_url"),
        )
        if backwards:
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
        if len(page) == limit:
            last = page[-1].stream_ordering
            response["end"] = stream_token(last - 1 if backwards else last)
        if event_filter.get("lazy_load_members") and visible:
            response["state"] = await self._member_state_for(reader, room_id, visible)
        return response

    async def _member_state_for(self, reader: Reader, room_id: str, events: list[StoredEvent]) -> list[dict[str, Any]]:
        state_ids = (await self.room_events.head(room_id)).state_ids
        senders = {e.sender for e in events}
        ids = [state_ids[("m.room.member", s)] for s in senders if ("m.room.member", s) in state_ids]
        found = await self.events.get_events(ids)
        return await self.serialize(reader, found.values())

    async def context(self, reader: Reader, room_id: str, event_id: str, limit: int) -> dict[str, Any]:
        await self.require_member_or_readable(reader.user_id, room_id)
        event = await self.events.get_event(event_id)
        if event is None or event.room_id != room_id or not await self.filter_visible(reader.user_id, room_id, [event]):
            raise not_found("Event not found")
        before_count = limit // 2
        after_count = limit - before_count
        before = await self.events.room_events(room_id, before=event.stream_ordering, backwards=True, limit=before_count)
        after = await self.events.room_events(room_id, after=event.stream_ordering, backwards=False, limit=after_count)
        before_visible = await self.filter_visible(reader.user_id, room_id, before)
        after_visible = await self.filter_visible(reader.user_id, room_id, after)
        start = (before[-1].stream_ordering - 1) if before else event.stream_ordering - 1
        end = after[-1].stream_ordering if after else event.stream_ordering
        group = (await self.events.get_state_groups_of([event.event_id])).get(event.event_id)
        state_ids = await self.state.get_state_ids(group) if group is not None else {}
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
        if len(page) == limit:
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
        chunk_events = [found[r] for r, _ in roots if r in found]
        if participated_only:
            chunk_events = [e for e in chunk_events if await self._participated(reader.user_id, e)]
        visible = await self.filter_visible(reader.user_id, room_id, chunk_events)
        chunk = await self.serialize(reader, visible)
        for item in chunk:
            item["unsigned"].setdefault("m.relations", {})["m.thread"] = await self.thread_summary(
                reader, room_id, item["event_id"]
            )
        response: dict[str, Any] = {"chunk": chunk}
        if len(roots) == limit:
            response["next_batch"] = stream_token(roots[-1][1] - 1)
        return response

    async def _participated(self, user_id: str, root: StoredEvent) -> bool:
        if root.sender == user_id:
            return True
        replies = await self.events.relations(
            root.event_id, rel_type="m.thread", before=None, after=None, backwards=True, limit=1000
        )
        return any(reply.sender == user_id for reply in replies)

    async def thread_summary(self, reader: Reader, room_id: str, root_id: str) -> dict[str, Any]:
        replies = await self.events.relations(
            root_id, rel_type="m.thread", before=None, after=None, backwards=True, limit=1000
        )
        visible = await self.filter_visible(reader.user_id, room_id, replies)
        latest = (await self.serialize(reader, visible[:1]))[0] if visible else None
        summary: dict[str, Any] = {
            "count": len(visible),
            "current_user_participated": any(r.sender == reader.user_id for r in visible),
        }
        if latest is not None:
            summary["latest_event"] = latest
        return summary
