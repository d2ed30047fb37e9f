"""The /sync response (spec: Client-Server API, "Syncing").

`SyncBuilder.build` answers one sync between two tokens: `since` (None for an initial
sync) and `now`, the notifier's positions when the build started. Every query is
bounded by `now`, so what is written meanwhile is left for the next sync, and a
stream whose position did not move since `since` is not queried at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homeserver.rooms.reading import Reader
from homeserver.sync.filters import SyncFilter
from homeserver.sync.tokens import SyncToken
from storage.events import StoredEvent
from storage.rooms import Membership
from storage.state import StateKey
from storage.sync import UNREAD_CAP, UNREAD_TYPES

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

TO_DEVICE_LIMIT = 100
MAX_HEROES = 5
STRIPPED_STATE = (
    ("m.room.create", ""),
    ("m.room.join_rules", ""),
    ("m.room.name", ""),
    ("m.room.avatar", ""),
    ("m.room.canonical_alias", ""),
    ("m.room.encryption", ""),
    ("m.room.topic", ""),
)


@dataclass
class SyncRequest:
    user_id: str
    device_id: str
    since: SyncToken | None
    filter: SyncFilter
    full_state: bool = False
    use_state_after: bool = False


@dataclass
class _Context:
    request: SyncRequest
    now: SyncToken
    reader: Reader
    ignored: set[str]
    room_account_data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # room -> the unfiltered timeline page, when it covers all of (since, now].
    complete_pages: dict[str, list[StoredEvent]] = field(default_factory=dict)


class SyncBuilder:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def build(self, request: SyncRequest, now: SyncToken) -> tuple[dict[str, Any], bool]:
        """(response, whether it carries anything new)."""
        hs = self.hs
        since = request.since
        ctx = _Context(request, now, Reader(request.user_id, request.device_id), await hs.sync_cache.ignored_users(request.user_id))
        next_batch = now
        response: dict[str, Any] = {}

        # Account data: global to the top level, per room into each room.
        global_data: list[dict[str, Any]] = []
        if since is None or since.account_data < now.account_data:
            after = since.account_data if since else 0
            for room_id, data_type, content in await hs.account_data.changed(request.user_id, after, now.account_data):
                if room_id:
                    if request.filter.room_account_data.allows_type(data_type):
                        ctx.room_account_data.setdefault(room_id, []).append({"type": data_type, "content": content})
                elif request.filter.account_data.allows_type(data_type):
                    global_data.append({"type": data_type, "content": content})
        limit = request.filter.account_data.limit
        response["account_data"] = {"events": global_data[:limit] if limit else global_data}

        rooms, room_updates = await self._rooms(ctx)
        response["rooms"] = rooms

        presence = await self._presence(ctx)
        response["presence"] = {"events": presence}

        to_device, to_device_position = await self._to_device(ctx)
        response["to_device"] = {"events": to_device}
        next_batch = next_batch.with_position("to_device", to_device_position)

        device_lists = await self._device_lists(ctx) if since is not None else {"changed": [], "left": []}
        response["device_lists"] = device_lists

        counts, fallback = await hs.e2ee.key_counts(request.user_id, request.device_id)
        response["device_one_time_keys_count"] = {"signed_curve25519": 0, **counts}
        response["device_unused_fallback_key_types"] = fallback
        response["next_batch"] = next_batch.encode()

        has_updates = bool(
            room_updates or global_data or presence or to_device or device_lists["changed"] or device_lists["left"]
        )
        return response, has_updates

    # --- rooms -----------------------------------------------------------------------

    async def _rooms(self, ctx: _Context) -> tuple[dict[str, Any], bool]:
        hs = self.hs
        request, since, now = ctx.request, ctx.request.since, ctx.now
        flt = request.filter
        memberships = [m for m in await hs.sync_cache.memberships(request.user_id) if flt.allows_room(m.room_id)]
        # Rooms with new events, new receipts or typing changes: only those are built.
        joined = [m for m in memberships if m.membership == "join" and m.stream_ordering <= now.room]
        active: set[str] = set()
        receipts_by_room: dict[str, list[Any]] = defaultdict(list)
        if since is not None:
            joined_ids = [m.room_id for m in joined]
            if since.room < now.room:
                active |= await hs.sync_cache.rooms_changed_since(joined_ids, since.room)
            if since.receipts < now.receipts:
                for receipt in await hs.receipts.changed(joined_ids, since.receipts, now.receipts):
                    receipts_by_room[receipt.room_id].append(receipt)
            active |= set(receipts_by_room)
            active |= {r for r in joined_ids if hs.typing.changed_since(r, since.typing)}
            active |= set(ctx.room_account_data)
        else:
            for receipt in await hs.receipts.changed([m.room_id for m in joined], 0, now.receipts):
                receipts_by_room[receipt.room_id].append(receipt)

        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        for m in memberships:
            if m.stream_ordering > now.room:
                continue  # changed after this sync's position: the next sync has it
            changed = since is None or m.stream_ordering > since.room
            if m.membership == "join":
                newly = since is None or changed
                if not newly and m.room_id not in active and not request.full_state:
                    continue
                room = await self._joined_room(ctx, m, None if newly else since.room, receipts_by_room.get(m.room_id, []))
                if room is not None:
                    join[m.room_id] = room
            elif m.membership == "invite" and changed:
                if m.sender in ctx.ignored:
                    continue
                invite[m.room_id] = {"invite_state": {"events": await self._stripped_state(m)}}
            elif m.membership == "knock" and changed:
                knock[m.room_id] = {"knock_state": {"events": await self._stripped_state(m)}}
            elif m.membership in ("leave", "ban"):
                if since is None and not flt.include_leave:
                    continue
                if since is not None and not changed and not (request.full_state and flt.include_leave):
                    continue
                leave[m.room_id] = await self._left_room(ctx, m)
        rooms = {"join": join, "invite": invite, "leave": leave, "knock": knock}
        return rooms, bool(join or invite or leave or knock)

    async def _timeline(
        self, ctx: _Context, m: Membership, after: int | None, upto: int
    ) -> tuple[list[StoredEvent], bool, int]:
        """(visible events oldest first, limited, position just before the first one)."""
        flt = ctx.request.filter
        room_id = m.room_id
        if flt.timeline.excludes_everything or not flt.timeline.allows_room(room_id):
            return [], False, upto
        limit = flt.timeline_limit
        page = await self.hs.events.room_events(
            room_id, after=after, before=upto + 1, backwards=True, limit=limit + 1, **flt.timeline.store_kwargs()
        )
        limited = len(page) > limit
        page = list(reversed(page[:limit]))
        if after is not None and not limited and not any(flt.timeline.store_kwargs().values()):
            ctx.complete_pages[room_id] = page
        start = page[0].stream_ordering - 1 if page else upto
        if not limited and after is not None:
            start = after
        if m.membership == "join" and page and m.stream_ordering < page[0].stream_ordering:
            # Joined before all of these and still joined: every one is visible, but
            # for what ignored users sent.
            visible = [e for e in page if e.state_key is not None or e.sender not in ctx.ignored]
        else:
            visible = await self.hs.room_reader.filter_visible(ctx.request.user_id, room_id, page)
        return visible, limited, start

    async def _state_ids_at(self, room_id: str, position: int) -> dict[StateKey, str]:
        return await self.hs.room_reader.state_ids_at(room_id, position)

    async def _room_body(
        self,
        ctx: _Context,
        m: Membership,
        since_room: int | None,
        upto: int,
        *,
        full: bool,
    ) -> tuple[dict[str, Any], list[StoredEvent]]:
        """timeline + state for a joined or left room."""
        hs = self.hs
        request = ctx.request
        flt = request.filter
        room_id = m.room_id
        timeline, limited, start = await self._timeline(ctx, m, since_room, upto)
        if since_room is not None and not full and not limited and not request.use_state_after:
            # The timeline starts right at `since`: no state changed in between. Lazy
            # members come from the newest state.
            state_start = dict((await hs.room_events.head(room_id)).state_ids) if flt.state.lazy_load_members else {}
            wanted: dict[StateKey, str] = {}
        else:
            state_start = await self._state_ids_at(room_id, start)
            if full or since_room is None:
                wanted = dict(state_start)
            else:
                before = await self._state_ids_at(room_id, since_room)
                wanted = {k: v for k, v in state_start.items() if before.get(k) != v}
        in_timeline = {e.event_id for e in timeline}
        if request.use_state_after:
            end_state = await self._state_ids_at(room_id, upto)
            if full or since_room is None:
                wanted = dict(end_state)
            else:
                before = await self._state_ids_at(room_id, since_room)
                wanted = {k: v for k, v in end_state.items() if before.get(k) != v}
            in_timeline = set()

        # Lazy-loading: members only for the timeline's senders (and the user on a
        # full load); everything else as filtered.
        state_filter = flt.state
        if state_filter.lazy_load_members:
            senders = {e.sender for e in timeline}
            if full or since_room is None:
                senders.add(request.user_id)
            wanted = {k: v for k, v in wanted.items() if k[0] != "m.room.member" or k[1] in senders}
            for sender in senders:
                key = ("m.room.member", sender)
                if key in state_start and key not in wanted:
                    wanted[key] = state_start[key]
        state_ids = [v for v in wanted.values() if v not in in_timeline]
        found = await hs.events.get_events(state_ids)
        state_events = [
            e
            for e in (found[i] for i in state_ids if i in found)
            if state_filter.allows(e.type, e.sender, e.content) and state_filter.allows_room(room_id)
        ]
        if state_filter.limit:
            state_events = state_events[: state_filter.limit]
        timeline = [e for e in timeline if flt.timeline.allows(e.type, e.sender, e.content)]
        prev_batch = ctx.now.with_position("room", start).encode()
        body: dict[str, Any] = {
            "timeline": {
                "events": await self._serialize(ctx, timeline),
                "limited": limited,
                "prev_batch": prev_batch,
            },
        }
        serialized_state = await self._serialize(ctx, state_events)
        body["state_after" if request.use_state_after else "state"] = {"events": serialized_state}
        body["account_data"] = {"events": ctx.room_account_data.get(room_id, [])}
        return body, [*state_events, *timeline]

    async def _joined_room(
        self, ctx: _Context, m: Membership, since_room: int | None, receipts: list[Any]
    ) -> dict[str, Any] | None:
        request = ctx.request
        full = request.full_state
        body, shown = await self._room_body(ctx, m, since_room, ctx.now.room, full=full)
        ephemeral = self._ephemeral(ctx, m.room_id, receipts, since_room is None)
        body["ephemeral"] = {"events": ephemeral}
        body["unread_notifications"] = await self._unread(ctx, m.room_id)
        if since_room is None or full or any(e.type == "m.room.member" for e in shown):
            body["summary"] = await self._summary(ctx, m.room_id)
        else:
            body["summary"] = {}
        empty = (
            since_room is not None
            and not full
            and not body["timeline"]["events"]
            and not body.get("state", body.get("state_after", {})).get("events")
            and not ephemeral
            and not body["account_data"]["events"]
        )
        return None if empty else body

    async def _left_room(self, ctx: _Context, m: Membership) -> dict[str, Any]:
        since = ctx.request.since
        since_room = since.room if since is not None and since.room < m.stream_ordering else None
        body, _ = await self._room_body(ctx, m, since_room, m.stream_ordering, full=ctx.request.full_state)
        return body

    def _ephemeral(self, ctx: _Context, room_id: str, receipts: list[Any], initial: bool) -> list[dict[str, Any]]:
        flt = ctx.request.filter.ephemeral
        if not flt.allows_room(room_id) or flt.excludes_everything:
            return []
        out: list[dict[str, Any]] = []
        since = ctx.request.since
        if flt.allows_type("m.typing"):
            typing_changed = initial or since is None or self.hs.typing.changed_since(room_id, since.typing)
            users = [u for u in self.hs.typing.users(room_id) if u not in ctx.ignored]
            if typing_changed and (users or not initial):
                out.append({"type": "m.typing", "content": {"user_ids": users}})
        if receipts and flt.allows_type("m.receipt"):
            content: dict[str, Any] = {}
            for r in receipts:
                if r.user_id in ctx.ignored:
                    continue
                if r.receipt_type == "m.read.private" and r.user_id != ctx.request.user_id:
                    continue
                data = dict(r.data)
                if r.thread_id:
                    data["thread_id"] = r.thread_id
                content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = data
            if content:
                out.append({"type": "m.receipt", "content": content})
        if flt.limit:
            out = out[: flt.limit]
        return out

    async def _unread(self, ctx: _Context, room_id: str) -> dict[str, int]:
        user_id = ctx.request.user_id
        since = ctx.request.since
        page = ctx.complete_pages.get(room_id)
        generation = self.hs.sync_cache.receipt_generation(user_id, room_id)
        cached = self.hs.sync_cache.unread(user_id, room_id)
        if page is not None and cached is not None and since is not None and cached[1] == since.room:
            # The page is everything since the last count: count on from there.
            count = cached[0]
            for event in page:
                if event.sender == user_id:
                    count = 0
                elif event.state_key is None and event.type in UNREAD_TYPES:
                    count += 1
            count = min(count, UNREAD_CAP)
        else:
            count = await self.hs.sync_queries.unread_after_receipt(room_id, user_id, ctx.now.room)
        self.hs.sync_cache.set_unread(user_id, room_id, count, ctx.now.room, generation)
        return {"notification_count": count, "highlight_count": 0}

    async def _summary(self, ctx: _Context, room_id: str) -> dict[str, Any]:
        members = await self.hs.room_store.members(room_id, ("join", "invite"))
        joined = [m.user_id for m in members if m.membership == "join"]
        invited = [m.user_id for m in members if m.membership == "invite"]
        heroes = [u for u in sorted(joined + invited) if u != ctx.request.user_id][:MAX_HEROES]
        if not heroes:
            left = await self.hs.room_store.members(room_id, ("leave", "ban"))
            heroes = [m.user_id for m in left if m.user_id != ctx.request.user_id][:MAX_HEROES]
        return {"m.heroes": heroes, "m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}

    async def _stripped_state(self, m: Membership) -> list[dict[str, Any]]:
        """Stripped state for an invite or knock: the room's identity, the inviter's
        membership and the membership event itself."""
        hs = self.hs
        group = (await hs.events.get_state_groups_of([m.event_id])).get(m.event_id)
        state = await hs.state_store.get_state_ids(group) if group is not None else {}
        keys = [*STRIPPED_STATE, ("m.room.member", m.sender)]
        ids = [state[k] for k in keys if k in state and state[k] != m.event_id]
        found = await hs.events.get_events([*ids, m.event_id])
        out = []
        for event_id in [*ids, m.event_id]:
            event = found.get(event_id)
            if event is None:
                continue
            out.append(
                {"type": event.type, "state_key": event.state_key, "content": event.content, "sender": event.sender}
            )
        return out

    async def _serialize(self, ctx: _Context, events: list[StoredEvent]) -> list[dict[str, Any]]:
        if not events:
            return []
        flt = ctx.request.filter
        if flt.event_format == "federation":
            serialized = [dict(e.pdu) for e in events]
        else:
            serialized = await self.hs.room_reader.serialize(ctx.reader, events, include_room_id=False)
        return [flt.shape(e) for e in serialized]

    # --- other streams ---------------------------------------------------------------

    async def _presence(self, ctx: _Context) -> list[dict[str, Any]]:
        since = ctx.request.since
        after = since.presence if since else 0
        if after >= ctx.now.presence:
            return []
        flt = ctx.request.filter.presence
        if flt.excludes_everything:
            return []
        events = await self.hs.presence.changed(ctx.request.user_id, after, ctx.now.presence)
        events = [
            e for e in events if e["sender"] not in ctx.ignored and flt.allows(e["type"], e["sender"])
        ]
        return events[: flt.limit] if flt.limit else events

    async def _to_device(self, ctx: _Context) -> tuple[list[dict[str, Any]], int]:
        hs = self.hs
        request = ctx.request
        since = request.since
        after = since.to_device if since else 0
        if since is not None and since.to_device > 0:
            await hs.e2ee.acknowledge_to_device(request.user_id, request.device_id, since.to_device)
        if after >= ctx.now.to_device:
            return [], ctx.now.to_device
        pending = await hs.to_device.pending(request.user_id, request.device_id, after, ctx.now.to_device, TO_DEVICE_LIMIT)
        if len(pending) == TO_DEVICE_LIMIT:
            return [m for _, m in pending], pending[-1][0]
        return [m for _, m in pending], ctx.now.to_device

    async def _device_lists(self, ctx: _Context) -> dict[str, list[str]]:
        since = ctx.request.since
        assert since is not None
        changed, left = await self.hs.e2ee.device_list_delta(ctx.request.user_id, since, ctx.now)
        return {"changed": sorted(changed), "left": sorted(left)}
