"""Room aliases and the public room directory."""

from __future__ import annotations

import re
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import user_power_level_in_state
from homeserver.rooms.events import RoomEvents
from storage.directory import AliasStore
from storage.rooms import RoomStore

ALIAS_RE = re.compile(r"^#[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
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

    def _local(self, alias: str) -> None:
        check_alias_syntax(alias)
        if alias.split(":", 1)[1] != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Aliases of other servers cannot be managed here")

    async def check_new_alias(self, alias: str) -> str:
        self._local(alias)
        if await self.aliases.get(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        return alias

    async def create_alias(self, alias: str, room_id: str, creator: str) -> None:
        await self.check_new_alias(alias)
        await self.room_events.head(room_id)
        if not await self.aliases.create(alias, room_id, creator):
            raise MatrixError(409, "M_UNKNOWN", "Room alias already taken")

    async def resolve(self, alias: str) -> str:
        check_alias_syntax(alias)
        found = await self.aliases.get(alias)
        if found is None:
            raise not_found(f"Room alias {alias} not found")
        return found[0]

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
