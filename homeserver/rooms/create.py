"""POST /createRoom: the initial events in the order the spec lists them.

create, the creator's join, power levels, canonical alias, the preset's join rules /
history visibility / guest access, initial_state, name, topic, then invites.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from homeserver.errors import MatrixError
from homeserver.events import (
    UnsupportedRoomVersion,
    default_power_levels_content,
    get_room_version,
)
from homeserver.rooms.events import RoomEvents
from homeserver.rooms.membership import Membership

PRESETS: dict[str, dict[str, str]] = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": "forbidden"},
}

# State that createRoom sets itself; initial_state may not override these.
_RESERVED_INITIAL_STATE = {("m.room.create", ""), ("m.room.power_levels", "")}


class CreateRoomRequest(msgspec.Struct):
    preset: str | None = None
    visibility: str = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: list[str] = msgspec.field(default_factory=list)
    is_direct: bool = False
    initial_state: list[dict[str, Any]] = msgspec.field(default_factory=list)
    creation_content: dict[str, Any] = msgspec.field(default_factory=dict)
    power_level_content_override: dict[str, Any] | None = None
    room_version: str | None = None


def topic_content(topic: str) -> dict[str, Any]:
    # Spec v1.15: m.topic carries the topic as text/plain content blocks as well.
    return {"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}


class RoomCreator:
    def __init__(self, server_name: str, room_events: RoomEvents, membership: Membership, default_version: str) -> None:
        self.server_name = server_name
        self.room_events = room_events
        self.membership = membership
        self.default_version = default_version

    async def create(self, creator: str, request: CreateRoomRequest, publish: Any) -> tuple[str, str | None]:
        """Create the room; returns (room_id, alias). `publish(room_id)` lists it."""
        try:
            version = get_room_version(request.room_version or self.default_version)
        except UnsupportedRoomVersion:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version") from None
        preset_name = request.preset or ("public_chat" if request.visibility == "public" else "private_chat")
        if preset_name not in PRESETS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]
        for user_id in request.invite:
            await self.membership.check_invitee(user_id)
        alias = None
        if request.room_alias_name is not None:
            alias = await self.membership.directory.check_new_alias(f"#{request.room_alias_name}:{self.server_name}")

        creation = dict(request.creation_content)
        creation.pop("room_version", None)
        creation["room_version"] = version.identifier
        if preset_name == "trusted_private_chat" and version.creators_have_infinite_power and request.invite:
            # In v12 "same power as the creator" means being a creator.
            creation["additional_creators"] = list(dict.fromkeys(request.invite))
        now_ms = int(time.time() * 1000)
        room_id, _ = await self.room_events.create_room(creator, version, creation, now_ms)

        send = self.room_events.send
        await self.membership.join_local(creator, room_id)
        power_levels = default_power_levels_content(version, creator)
        if preset_name == "trusted_private_chat" and not version.creators_have_infinite_power:
            for user_id in request.invite:
                power_levels["users"][user_id] = 100
        if request.power_level_content_override:
            power_levels.update(request.power_level_content_override)
        await send(creator, room_id, "m.room.power_levels", power_levels, state_key="")
        if alias is not None:
            await self.membership.directory.create_alias(alias, room_id, creator)
            await send(creator, room_id, "m.room.canonical_alias", {"alias": alias}, state_key="")
        await send(creator, room_id, "m.room.join_rules", {"join_rule": preset["join_rule"]}, state_key="")
        await send(
            creator, room_id, "m.room.history_visibility", {"history_visibility": preset["history_visibility"]}, state_key=""
        )
        await send(creator, room_id, "m.room.guest_access", {"guest_access": preset["guest_access"]}, state_key="")
        for state in request.initial_state:
            key = (state["type"], state.get("state_key", ""))
            if key in _RESERVED_INITIAL_STATE:
                continue
            await send(creator, room_id, key[0], state.get("content", {}), state_key=key[1])
        if request.name is not None:
            await send(creator, room_id, "m.room.name", {"name": request.name}, state_key="")
        if request.topic is not None:
            await send(creator, room_id, "m.room.topic", topic_content(request.topic), state_key="")
        for user_id in request.invite:
            await self.membership.invite(creator, room_id, user_id, is_direct=request.is_direct)
        if request.visibility == "public":
            await publish(room_id)
        return room_id, alias
