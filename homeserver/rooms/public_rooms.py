"""The public room directory: rooms published by their admins, largest first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.errors import MatrixError
from homeserver.rooms.events import RoomEvents
from storage.events import EventStore
from storage.rooms import RoomStore

DEFAULT_LIMIT = 100


def _offset(since: str | None) -> int:
    if since is None:
        return 0
    if since.startswith("p") and since[1:].isdigit():
        return int(since[1:])
    raise MatrixError(400, "M_INVALID_PARAM", "Invalid since token")


class PublicRooms:
    def __init__(self, server_name: str, rooms: RoomStore, room_events: RoomEvents, events: EventStore) -> None:
        self.server_name = server_name
        self.rooms = rooms
        self.room_events = room_events
        self.events = events
        # Another server's directory (federation's RemotePublicRooms.query), when on.
        self.remote: Callable[..., Awaitable[dict[str, Any]]] | None = None

    async def describe(self, room_id: str, joined: int) -> dict[str, Any]:
        head = await self.room_events.head(room_id)
        wanted = {
            key: head.state_ids[key]
            for key in (
                ("m.room.name", ""),
                ("m.room.topic", ""),
                ("m.room.canonical_alias", ""),
                ("m.room.avatar", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
                ("m.room.guest_access", ""),
                ("m.room.create", ""),
            )
            if key in head.state_ids
        }
        found = await self.events.get_events(wanted.values())

        def content(event_type: str) -> dict[str, Any]:
            event = found.get(wanted.get((event_type, ""), ""))
            return event.content if event and not event.redacted_by else {}

        chunk: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": joined,
            "world_readable": content("m.room.history_visibility").get("history_visibility") == "world_readable",
            "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
            "join_rule": content("m.room.join_rules").get("join_rule", "public"),
        }
        for key, event_type, field in (
            ("name", "m.room.name", "name"),
            ("topic", "m.room.topic", "topic"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("avatar_url", "m.room.avatar", "url"),
        ):
            value = content(event_type).get(field)
            if isinstance(value, str) and value:
                chunk[key] = value
        room_type = content("m.room.create").get("type")
        if isinstance(room_type, str):
            chunk["room_type"] = room_type
        return chunk

    async def list(
        self,
        *,
        limit: int | None,
        since: str | None,
        search: str | None,
        server: str | None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
    ) -> dict[str, Any]:
        if server is not None and server != self.server_name:
            if self.remote is None:
                raise MatrixError(404, "M_NOT_FOUND", "Public rooms of other servers need federation")
            return await self.remote(
                server,
                limit=limit,
                since=since,
                search=search,
                include_all_networks=include_all_networks,
                third_party_instance_id=third_party_instance_id,
            )
        if limit is not None and limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        room_ids = await self.rooms.public_room_ids()
        counts = await self.rooms.joined_member_counts(room_ids)
        chunks = [await self.describe(room_id, counts.get(room_id, 0)) for room_id in room_ids]
        if search:
            needle = search.lower()
            chunks = [
                c
                for c in chunks
                if any(needle in str(c.get(k, "")).lower() for k in ("name", "topic", "canonical_alias", "room_id"))
            ]
        chunks.sort(key=lambda c: (-c["num_joined_members"], c["room_id"]))
        start = _offset(since)
        size = limit if limit else DEFAULT_LIMIT
        page = chunks[start : start + size]
        response: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(chunks)}
        if start + size < len(chunks):
            response["next_batch"] = f"p{start + size}"
        if start > 0:
            response["prev_batch"] = f"p{max(0, start - size)}"
        return response
