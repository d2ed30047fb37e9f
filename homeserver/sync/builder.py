"""The /sync response (spec: Client-Server API, "Syncing").

`SyncBuilder.build` answers one sync between two tokens: `since` (None for an initial
sync) and `now`, the notifier's positions when the build started. Every query is
bounded by `now`, so what is written meanwhile is left for the next sync, and a
stream whose position did not move since `since` is not queried at all.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from typing import TYPE_CHECKING, Any

import msgspec

from homeserver.push import PUSH_RULES_TYPE, push_rules_content
from homeserver.rooms.reading import Reader
from homeserver.sync.filters import SyncFilter
from homeserver.sync.tokens import SyncToken
from storage.events import StoredEvent
from storage.push_actions import MAIN_THREAD
from storage.rooms import Membership
from storage.state import StateKey

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

TO_DEVICE_LIMIT = 100
# Timeline pages shared between syncs asking for the same one (see `_shared_page`).
SHARED_PAGES = 4096
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


class SyncRequest(msgspec.Struct):
    user_id: str
    device_id: str
    since: SyncToken | None
    filter: SyncFilter
    full_state: bool = False
    use_state_after: bool = False


class _Context(msgspec.Struct):
    request: SyncRequest
    now: SyncToken
    reader: Reader
    ignored: set[str]
    room_account_data: dict[str, list[dict[str, Any]]] = msgspec.field(default_factory=dict)
    # room -> the unfiltered timeline page, when it covers all of (since, now].
    complete_pages: dict[str, list[StoredEvent]] = msgspec.field(default_factory=dict)
    # Fetched for all rooms built from scratch at once (see `_prefetch`): room -> its
    # newest timeline_limit + 1 events (newest first), event -> state group, room ->
    # joined and invited members.
    pages: dict[str, list[StoredEvent]] = msgspec.field(default_factory=dict)
    groups: dict[str, int] = msgspec.field(default_factory=dict)
    members: dict[str, list[Membership]] = msgspec.field(default_factory=dict)
    # Serialisation is done once for the whole response: (the list to fill, events).
    pending: list[tuple[list[dict[str, Any]], list[StoredEvent]]] = msgspec.field(default_factory=list)


class SyncBuilder:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        # (room, after, upto, limit, filter) -> the IDs of that timeline page (see
        # `_shared_page`); None while it is being read.
        self._pages: OrderedDict[tuple[Any, ...], asyncio.Future[tuple[str, ...] | None]] = OrderedDict()

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
        # m.push_rules: in every initial sync (a user who never changed a rule has no
        # row), and always the current rules, server defaults included.
        if request.filter.account_data.allows_type(PUSH_RULES_TYPE) and (
            since is None or any(e["type"] == PUSH_RULES_TYPE for e in global_data)
        ):
            rules = push_rules_content(request.user_id, await hs.push_rules.get(request.user_id))
            global_data = [e for e in global_data if e["type"] != PUSH_RULES_TYPE]
            global_data.append({"type": PUSH_RULES_TYPE, "content": rules})
        limit = request.filter.account_data.limit
        response["account_data"] = {"events": global_data[:limit] if limit else global_data}

        rooms, room_updates = await self._rooms(ctx)
        await self._serialize_pending(ctx)
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

        await self._prefetch(
            ctx, [m for m in joined if since is None or m.stream_ordering > since.room]
        )
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
        page = ctx.pages.get(room_id) if after is None and upto == ctx.now.room else None
        if not page and after is not None:
            page = await self._shared_page(room_id, after, upto, limit + 1, flt.timeline.store_kwargs())
        elif not page:
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
            visible = await self.hs.room_reader.filter_visible(
                ctx.request.user_id,
                room_id,
                page,
                ignored=ctx.ignored,
                groups=ctx.groups,
                # Still joined: the current membership is the latest join.
                last_join=m.stream_ordering if m.membership == "join" else None,
            )
        return visible, limited, start

    async def _shared_page(
        self, room_id: str, after: int, upto: int, limit: int, kwargs: dict[str, Any]
    ) -> list[StoredEvent]:
        """A room's events in (after, upto], newest first, queried once for every
        sync that asks for the same page: when one message wakes thousands of
        long-polls in a room, they all ask for it. Only the event IDs are shared;
        the events come from the event cache, which a redaction updates. The set of
        accepted events in a range that ends at or before the stream position never
        changes (new events come after it; backfilled ones go below zero)."""
        key = (room_id, after, upto, limit, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
        shared = self._pages.get(key)
        if shared is None:
            shared = asyncio.get_running_loop().create_future()
            self._pages[key] = shared
            if len(self._pages) > SHARED_PAGES:
                self._pages.popitem(last=False)
            try:
                page = await self.hs.events.room_events(
                    room_id, after=after, before=upto + 1, backwards=True, limit=limit, **kwargs
                )
            except BaseException:
                # The others query for themselves.
                if self._pages.get(key) is shared:
                    del self._pages[key]
                shared.set_result(None)
                raise
            shared.set_result(tuple(e.event_id for e in page))
            return page
        # A waiting request that is cancelled must not cancel the shared future.
        ids = await asyncio.shield(shared)
        if ids is None:
            return await self.hs.events.room_events(
                room_id, after=after, before=upto + 1, backwards=True, limit=limit, **kwargs
            )
        found = await self.hs.events.get_events(ids)
        return [found[i] for i in ids if i in found]

    async def _state_ids_at(self, room_id: str, position: int, ctx: _Context | None = None) -> dict[StateKey, str]:
        page = ctx.pages.get(room_id) if ctx is not None else None
        if page:
            # The prefetched page (newest first) holds every accepted event of the room
            # down to its oldest one: the newest of them at or before `position` is
            # the one whose state is wanted; none older than the page's oldest
            # exists when the page is shorter than asked for.
            before = [e for e in page if e.stream_ordering <= position]
            if before and before[0].event_id in ctx.groups:
                return await self.hs.state_store.get_state_ids(ctx.groups[before[0].event_id])
            if not before and len(page) <= ctx.request.filter.timeline_limit:
                return {}
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
            state_start = await self._state_ids_at(room_id, start, ctx)
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
        prev_batch = ctx.now.encode_at_room(start)
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
        # (The events are serialised at the end of the build: look at `shown`.)
        ephemeral = self._ephemeral(ctx, m.room_id, receipts, since_room is None)
        body["ephemeral"] = {"events": ephemeral}
        body.update(await self._unread(ctx, m.room_id))
        if since_room is None or full or any(e.type == "m.room.member" for e in shown):
            body["summary"] = await self._summary(ctx, m.room_id)
        else:
            body["summary"] = {}
        empty = (
            since_room is not None
            and not full
            and not shown
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

    async def _unread(self, ctx: _Context, room_id: str) -> dict[str, Any]:
        """unread_notifications (and unread_thread_notifications when the filter asks)
        from the counts the push writer keeps per thread; cached until the user's
        notifications or read marks in the room change."""
        hs = self.hs
        user_id = ctx.request.user_id
        generation = hs.sync_cache.receipt_generation(user_id, room_id)
        cached = hs.sync_cache.unread(user_id, room_id)
        if cached is not None:
            counts = cached[0]
        else:
            counts = await hs.push_actions.store.unread_counts(user_id, room_id)
            hs.sync_cache.set_unread(user_id, room_id, counts, ctx.now.room, generation)
        if not ctx.request.filter.timeline.unread_thread_notifications:
            return {
                "unread_notifications": {
                    "notification_count": sum(c.notifications for c in counts.values()),
                    "highlight_count": sum(c.highlights for c in counts.values()),
                }
            }
        main = counts.get(MAIN_THREAD)
        return {
            "unread_notifications": {
                "notification_count": main.notifications if main else 0,
                "highlight_count": main.highlights if main else 0,
            },
            "unread_thread_notifications": {
                thread: {"notification_count": c.notifications, "highlight_count": c.highlights}
                for thread, c in counts.items()
                if thread != MAIN_THREAD and (c.notifications or c.highlights)
            },
        }

    async def _summary(self, ctx: _Context, room_id: str) -> dict[str, Any]:
        members = ctx.members.get(room_id)
        if members is None:
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
        if group is None:
            # A room we are not in: the stripped state the other server sent with its
            # invite, or with its answer to our knock, kept beside the event.
            event = await hs.events.get_event(m.event_id)
            unsigned = event.pdu.get("unsigned") if event is not None else None
            kept = (unsigned.get("invite_room_state") or unsigned.get("knock_room_state")) if isinstance(unsigned, dict) else None
            if event is not None and isinstance(kept, list):
                own = {"type": event.type, "state_key": event.state_key, "content": event.content, "sender": event.sender}
                return [
                    *(
                        {k: s[k] for k in ("type", "state_key", "content", "sender")}
                        for s in kept
                        if isinstance(s, dict) and (s.get("type"), s.get("state_key")) != (event.type, event.state_key)
                        and all(k in s for k in ("type", "state_key", "content", "sender"))
                    ),
                    own,
                ]
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
        """An empty list that `_serialize_pending` fills in at the end of the build,
        when the events of every room are serialised together (one look-up of
        transaction IDs, redactions and replaced state for the whole response)."""
        out: list[dict[str, Any]] = []
        if events:
            ctx.pending.append((out, events))
        return out

    async def _serialize_pending(self, ctx: _Context) -> None:
        flt = ctx.request.filter
        batch: list[tuple[list[dict[str, Any]], list[StoredEvent]]] = []
        size = 0
        for index, item in enumerate(ctx.pending):
            batch.append(item)
            size += len(item[1])
            if size < 500 and index < len(ctx.pending) - 1:
                continue
            events = [e for _, chunk in batch for e in chunk]
            if flt.event_format == "federation":
                serialized = [dict(e.pdu) for e in events]
            else:
                serialized = await self.hs.room_reader.serialize(ctx.reader, events, include_room_id=False)
            position = 0
            for out, chunk in batch:
                out.extend(flt.shape(e) for e in serialized[position : position + len(chunk)])
                position += len(chunk)
            batch, size = [], 0
        ctx.pending.clear()

    async def _prefetch(self, ctx: _Context, rooms: list[Membership]) -> None:
        """For the joined rooms built from scratch (all of them in an initial sync):
        their timelines, the state groups of those events and their members, in a
        few queries for all rooms instead of a few per room."""
        flt = ctx.request.filter
        if len(rooms) < 2 or flt.timeline.excludes_everything or any(flt.timeline.store_kwargs().values()):
            return
        hs = self.hs
        room_ids = [m.room_id for m in rooms if flt.timeline.allows_room(m.room_id)]
        ids = await hs.sync_queries.latest_event_ids(room_ids, ctx.now.room, flt.timeline_limit + 1)
        found = await hs.events.get_events(i for r in room_ids for i in ids[r])
        for room_id in room_ids:
            page = [found[i] for i in ids[room_id] if i in found]
            if page:
                ctx.pages[room_id] = page
        ctx.groups = await hs.events.get_state_groups_of([e.event_id for page in ctx.pages.values() for e in page])
        ctx.members = await hs.sync_queries.members_of([m.room_id for m in rooms], ("join", "invite"))

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
