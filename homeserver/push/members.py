"""Each room's joined members and their display names in the room, kept in memory
for push evaluation (every event of a 1,000-member room needs all of them).

Loaded from the room's current state on first use, then updated by each membership
event that is the room's current member state for its user (the normal case for
local sends). Anything else (a member event that lost state resolution, a member
change while loading) drops the room's entry so it is loaded afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from storage.events import StoredEvent

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

MAX_ROOMS = 10_000


def _display_name(event: StoredEvent) -> str | None:
    name = event.content.get("displayname")
    return name if isinstance(name, str) and name else None


class RoomMembers:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._rooms: OrderedDict[str, dict[str, str | None]] = OrderedDict()
        self._versions: dict[str, int] = {}

    async def joined(self, room_id: str) -> dict[str, str | None]:
        """Joined user ID -> display name in the room (None when unset)."""
        members = self._rooms.get(room_id)
        if members is not None:
            self._rooms.move_to_end(room_id)
            return members
        version = self._versions.get(room_id, 0)
        head = await self.hs.room_events.head(room_id)
        ids = [event_id for (kind, _), event_id in head.state_ids.items() if kind == "m.room.member"]
        found = await self.hs.events.get_events(ids)
        members = {
            e.state_key: _display_name(e)
            for e in found.values()
            if e.state_key is not None and e.content.get("membership") == "join"
        }
        if self._versions.get(room_id, 0) == version:
            self._rooms[room_id] = members
            if len(self._rooms) > MAX_ROOMS:
                self._rooms.popitem(last=False)
        return members

    async def member_event(self, event: StoredEvent) -> None:
        """A membership event was persisted: apply it, or forget the room."""
        room_id = event.room_id
        self._versions[room_id] = self._versions.get(room_id, 0) + 1
        members = self._rooms.get(room_id)
        if members is None or event.state_key is None:
            return
        head = await self.hs.room_events.head(room_id)
        if head.state_ids.get(("m.room.member", event.state_key)) != event.event_id:
            self._rooms.pop(room_id, None)
            return
        if event.content.get("membership") == "join":
            members[event.state_key] = _display_name(event)
        else:
            members.pop(event.state_key, None)

    def forget(self, room_id: str) -> None:
        self._versions[room_id] = self._versions.get(room_id, 0) + 1
        self._rooms.pop(room_id, None)
