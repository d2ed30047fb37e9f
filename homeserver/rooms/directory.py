"""Room aliases and the public room directory."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import user_power_level_in_state
from homeserver.rooms.events import RoomEvents
from storage.directory import AliasStore
from storage.rooms import RoomStore

# The local part: anything but ':', whitespace and control characters.
ALIAS_RE = re.compile(r"^#[^:\s\x00-\x1f\x7f]+:[A-Za-z0-9.\-\[\]:]+$")
MAX_ALIAS_LENGTH = 255


def check_alias_syntax(alias: str) -> None:
    if len(alias.encode()) > MAX_ALIAS_LENGTH or not ALIAS_RE.match(alias):
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room alias {alias!r}")


class Directory:
    def __init__(
        self, server_name: str, aliases: AliasStore, rooms: RoomStore, room_events: RoomEvents, admins_may_publish: bool
    ) -> None:
        self.server_name = server_name
        self.aliases = aliases
        self.rooms = rooms
        self.room_events = room_events
        self.admins_may_publish = admins_may_publish
        # Set when federation is on: asks an alias's own server (query/directory).
        self.remote_lookup: Callable[[str], Awaitable[tuple[str, list[str]]]] | None = None

    def _local(self, alias: str) -> None:
        check_alias_syntax(alias)
        if alias.split(":", 1)[1] != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Aliases of other servers cannot be managed here")

    async def check_new_alias(self, alias: str) -> str:
        self._local(alias)
        if await self.aliases.get(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        return alias

    async def create_alias(self, alias: str, room_id: str, creator: str, *, is_server_admin: bool = True) -> None:
        """PUT /directory/room/{alias}: 409 if taken (createRoom checks first and
        answers M_ROOM_IN_USE instead). Only members of the room may point an alias
        at it, unless `is_server_admin`."""
        self._local(alias)
        await self.room_events.head(room_id)
        if not is_server_admin:
            member = await self.room_events.state_event(room_id, "m.room.member", creator)
            if member is None or member.content.get("membership") != "join":
                raise forbidden("You must be in the room to create an alias for it")
        if not await self.aliases.create(alias, room_id, creator):
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")

    async def resolve(self, alias: str) -> str:
        return (await self.resolve_with_servers(alias))[0]

    async def resolve_with_servers(self, alias: str) -> tuple[str, list[str]]:
        """(room ID, servers that can be joined through) for a local or remote alias."""
        check_alias_syntax(alias)
        server = alias.split(":", 1)[1]
        if server != self.server_name:
            if self.remote_lookup is None:
                raise not_found(f"Room alias {alias} not found (it belongs to another server)")
            return await self.remote_lookup(alias)
        found = await self.aliases.get(alias)
        if found is None:
            raise not_found(f"Room alias {alias} not found")
        return found[0], [self.server_name]

    async def is_room_admin(self, user_id: str, room_id: str, level_name: str = "state_default") -> bool:
        head = await self.room_events.head(room_id)
        state = await self.room_events.auth_state(head, [("m.room.power_levels", ""), ("m.room.member", user_id)])
        member = state.get(("m.room.member", user_id))
        if member is None or member.get("content", {}).get("membership") != "join":
            return False
        power = state.get(("m.room.power_levels", ""))
        needed = 50
        if power is not None:
            content: dict[str, Any] = power.get("content", {})
            events = content.get("events", {})
            needed = events.get("m.room.canonical_alias", content.get("state_default", 50))
        return user_power_level_in_state(head.room_version, user_id, state) >= needed

    async def delete_alias(self, user_id: str, is_server_admin: bool, alias: str) -> None:
        self._local(alias)
        found = await self.aliases.get(alias)
        if found is None:
            raise not_found(f"Room alias {alias} not found")
        room_id, creator = found
        if not (is_server_admin or creator == user_id or await self.is_room_admin(user_id, room_id)):
            raise forbidden("You may not delete this alias")
        await self.aliases.delete(alias)

    async def set_visibility(self, user_id: str, is_server_admin: bool, room_id: str, public: bool) -> None:
        await self.room_events.head(room_id)
        allowed = is_server_admin or (self.admins_may_publish and await self.is_room_admin(user_id, room_id))
        if not allowed:
            raise forbidden("You may not change this room's directory visibility")
        await self.rooms.set_public(room_id, public)
