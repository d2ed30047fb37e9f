"""Power level lookups shared by the auth rules, state resolution and the
rooms service (m.room.power_levels in the client-server spec, the auth rule
"Definitions" in the server-server spec, room v12 creator power)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from .room_versions import RoomVersion

#: A user's level: an int, or :data:`CREATOR_POWER_LEVEL` for v12 creators.
PowerLevel = int | float

#: v12 room creators have "infinitely high" power: above every integer level,
#: equal only to other creators.
CREATOR_POWER_LEVEL: float = math.inf

#: Level of the creator when the room has no m.room.power_levels event (< v12).
DEFAULT_CREATOR_LEVEL = 100

# Defaults from the m.room.power_levels schema and the auth rule definitions.
# They apply both when a key is missing and when there is no power levels event.
NAMED_LEVEL_DEFAULTS: dict[str, int] = {
    "invite": 0,
    "kick": 50,
    "ban": 50,
    "redact": 50,
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
}

#: Default for ``notifications.room`` (the level needed to trigger @room).
NOTIFICATIONS_ROOM_DEFAULT = 50

StateMap = Mapping[tuple[str, str], Mapping[str, Any]]


def as_level(value: Any, default: int) -> int:
    """Read a stored level leniently.

    Auth rejects non-integer levels in v10+, but state resolution can still be
    handed such a (rejected) event via an auth chain, so never raise here.
    """
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _content(event: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if event is None:
        return {}
    content = event.get("content")
    return content if isinstance(content, Mapping) else {}


def room_creators(room_version: RoomVersion, create_event: Mapping[str, Any] | None) -> frozenset[str]:
    """The users the create event designates as room creators.

    v11+: the create ``sender``; before that ``content.creator``. v12 adds
    ``content.additional_creators``.
    """
    if create_event is None:
        return frozenset()
    content = _content(create_event)
    creators: set[str] = set()
    if room_version.implicit_room_creator:
        sender = create_event.get("sender")
        if isinstance(sender, str):
            creators.add(sender)
    else:
        creator = content.get("creator")
        if isinstance(creator, str):
            creators.add(creator)
    if room_version.creators_have_infinite_power:
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return frozenset(creators)


def user_power_level(
    room_version: RoomVersion,
    user_id: str,
    create_event: Mapping[str, Any] | None,
    power_levels_event: Mapping[str, Any] | None,
) -> PowerLevel:
    """A user's power level given the room's create and power levels events."""
    if room_version.creators_have_infinite_power and user_id in room_creators(room_version, create_event):
        return CREATOR_POWER_LEVEL
    if power_levels_event is None:
        # No power levels event: the creator has 100 and everyone else 0.
        return DEFAULT_CREATOR_LEVEL if user_id in room_creators(room_version, create_event) else 0
    content = _content(power_levels_event)
    users = content.get("users")
    users_default = as_level(content.get("users_default"), 0)
    if isinstance(users, Mapping) and user_id in users:
        return as_level(users[user_id], users_default)
    return users_default


def named_level(power_levels_event: Mapping[str, Any] | None, name: str) -> int:
    """``invite``/``kick``/``ban``/``redact``/``*_default`` with spec defaults."""
    default = NAMED_LEVEL_DEFAULTS[name]
    return as_level(_content(power_levels_event).get(name), default)


def required_event_level(
    power_levels_event: Mapping[str, Any] | None, event_type: str, is_state: bool
) -> int:
    """The *required power level* to send ``event_type``.

    ``events[type]`` if listed, else ``state_default`` for state events or
    ``events_default`` otherwise (the defaults apply even with no PL event).
    """
    content = _content(power_levels_event)
    events = content.get("events")
    fallback = named_level(power_levels_event, "state_default" if is_state else "events_default")
    if isinstance(events, Mapping) and event_type in events:
        return as_level(events[event_type], fallback)
    return fallback


def notification_level(power_levels_event: Mapping[str, Any] | None, key: str = "room") -> int:
    """The level needed to trigger a notification of kind ``key`` (e.g. @room)."""
    notifications = _content(power_levels_event).get("notifications")
    default = NOTIFICATIONS_ROOM_DEFAULT if key == "room" else 50
    if isinstance(notifications, Mapping) and key in notifications:
        return as_level(notifications[key], default)
    return default


# --- convenience over a state map -----------------------------------------

CREATE_KEY = ("m.room.create", "")
POWER_LEVELS_KEY = ("m.room.power_levels", "")


def user_power_level_in_state(room_version: RoomVersion, user_id: str, state: StateMap) -> PowerLevel:
    """:func:`user_power_level` reading the create/PL events from a state map."""
    return user_power_level(room_version, user_id, state.get(CREATE_KEY), state.get(POWER_LEVELS_KEY))


def default_power_levels_content(
    room_version: RoomVersion, creator: str, *, tombstone_level: int = 150
) -> dict[str, Any]:
    """The initial ``m.room.power_levels`` content a server sends at room creation.

    v12 creators have infinite power and MUST NOT be listed in ``users``; the
    spec also requires v12 rooms to give ``m.room.tombstone`` an explicit level
    above ``state_default`` so that upgrades stay with the creators by default.
    """
    content: dict[str, Any] = {
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "notifications": {"room": 50},
        "users": {},
    }
    if room_version.creators_have_infinite_power:
        content["events"]["m.room.tombstone"] = tombstone_level
    else:
        content["users"][creator] = 100
    return content
