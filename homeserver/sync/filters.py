"""Filters (spec: "Filtering"): validation and matching.

A filter is validated once, when uploaded or given inline, and turned into
`SyncFilter`, which the sync builder asks what to include.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from homeserver.errors import MatrixError

DEFAULT_TIMELINE_LIMIT = 10
MAX_LIMIT = 1000


def _bad(error: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", f"Invalid filter: {error}")


def _str_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"'{name}' must be a list of strings")
    return value


def _bool(value: Any, name: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be a boolean")
    return value


def _pattern(types: list[str] | None) -> re.Pattern[str] | None:
    if types is None:
        return None
    return re.compile("|".join("(?:" + ".*".join(re.escape(p) for p in t.split("*")) + ")" for t in types) + r"\Z" if types else r"(?!)")


class EventFilter(msgspec.Struct, dict=True):
    """Also the room event filter: rooms, not_rooms, contains_url and lazy loading are
    ignored where they do not apply. (`dict=True`: the compiled type patterns that
    __post_init__ adds are attributes beside the fields.)"""

    limit: int | None = None
    types: list[str] | None = None
    not_types: list[str] = msgspec.field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = msgspec.field(default_factory=list)
    rooms: list[str] | None = None
    not_rooms: list[str] = msgspec.field(default_factory=list)
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    # Room timeline filters: per-thread notification counts in /sync.
    unread_thread_notifications: bool = False

    def __post_init__(self) -> None:
        self._types = _pattern(self.types)
        self._not_types = _pattern(self.not_types) if self.not_types else None

    @classmethod
    def parse(cls, value: Any, name: str) -> EventFilter:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise _bad(f"'{name}' must be an object")
        limit = value.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise _bad(f"'{name}.limit' must be a positive integer")
        return cls(
            limit=min(limit, MAX_LIMIT) if limit is not None else None,
            types=_str_list(value.get("types"), f"{name}.types"),
            not_types=_str_list(value.get("not_types"), f"{name}.not_types") or [],
            senders=_str_list(value.get("senders"), f"{name}.senders"),
            not_senders=_str_list(value.get("not_senders"), f"{name}.not_senders") or [],
            rooms=_str_list(value.get("rooms"), f"{name}.rooms"),
            not_rooms=_str_list(value.get("not_rooms"), f"{name}.not_rooms") or [],
            contains_url=_bool(value.get("contains_url"), f"{name}.contains_url"),
            lazy_load_members=bool(_bool(value.get("lazy_load_members"), f"{name}.lazy_load_members")),
            include_redundant_members=bool(
                _bool(value.get("include_redundant_members"), f"{name}.include_redundant_members")
            ),
            unread_thread_notifications=bool(
                _bool(value.get("unread_thread_notifications"), f"{name}.unread_thread_notifications")
            ),
        )

    def allows_room(self, room_id: str) -> bool:
        return room_id not in self.not_rooms and (self.rooms is None or room_id in self.rooms)

    def allows_type(self, event_type: str) -> bool:
        if self._not_types is not None and self._not_types.match(event_type):
            return False
        return self._types is None or bool(self._types.match(event_type))

    def allows(self, event_type: str, sender: str | None, content: dict[str, Any] | None = None) -> bool:
        if not self.allows_type(event_type):
            return False
        if sender is not None:
            if sender in self.not_senders or (self.senders is not None and sender not in self.senders):
                return False
        if self.contains_url is not None and content is not None:
            if ("url" in content) != self.contains_url:
                return False
        return True

    def store_kwargs(self) -> dict[str, Any]:
        """The parts `EventStore.room_events` can apply in SQL."""
        return {
            "types": self.types if self.types is not None else None,
            "not_types": self.not_types or None,
            "senders": self.senders,
            "not_senders": self.not_senders or None,
            "contains_url": self.contains_url,
        }

    @property
    def excludes_everything(self) -> bool:
        return self.types == [] or self.senders == [] or self.rooms == []


class SyncFilter(msgspec.Struct):
    event_fields: list[str] | None = None
    event_format: str = "client"
    presence: EventFilter = msgspec.field(default_factory=EventFilter)
    account_data: EventFilter = msgspec.field(default_factory=EventFilter)
    rooms: list[str] | None = None
    not_rooms: list[str] = msgspec.field(default_factory=list)
    include_leave: bool = False
    timeline: EventFilter = msgspec.field(default_factory=EventFilter)
    state: EventFilter = msgspec.field(default_factory=EventFilter)
    ephemeral: EventFilter = msgspec.field(default_factory=EventFilter)
    room_account_data: EventFilter = msgspec.field(default_factory=EventFilter)

    @classmethod
    def parse(cls, value: Any) -> SyncFilter:
        if not isinstance(value, dict):
            raise _bad("a filter must be a JSON object")
        event_fields = _str_list(value.get("event_fields"), "event_fields")
        event_format = value.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise _bad("'event_format' must be 'client' or 'federation'")
        room = value.get("room")
        room = {} if room is None else room
        if not isinstance(room, dict):
            raise _bad("'room' must be an object")
        return cls(
            event_fields=event_fields,
            event_format=event_format,
            presence=EventFilter.parse(value.get("presence"), "presence"),
            account_data=EventFilter.parse(value.get("account_data"), "account_data"),
            rooms=_str_list(room.get("rooms"), "room.rooms"),
            not_rooms=_str_list(room.get("not_rooms"), "room.not_rooms") or [],
            include_leave=bool(_bool(room.get("include_leave"), "room.include_leave")),
            timeline=EventFilter.parse(room.get("timeline"), "room.timeline"),
            state=EventFilter.parse(room.get("state"), "room.state"),
            ephemeral=EventFilter.parse(room.get("ephemeral"), "room.ephemeral"),
            room_account_data=EventFilter.parse(room.get("account_data"), "room.account_data"),
        )

    def allows_room(self, room_id: str) -> bool:
        return room_id not in self.not_rooms and (self.rooms is None or room_id in self.rooms)

    @property
    def timeline_limit(self) -> int:
        return self.timeline.limit or DEFAULT_TIMELINE_LIMIT

    def shape(self, event: dict[str, Any]) -> dict[str, Any]:
        """Apply event_fields to one serialised event."""
        if self.event_fields is None:
            return event
        out: dict[str, Any] = {}
        for path in self.event_fields:
            parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", path)]
            source: Any = event
            for part in parts:
                if not isinstance(source, dict) or part not in source:
                    break
                source = source[part]
            else:
                target = out
                for part in parts[:-1]:
                    target = target.setdefault(part, {})
                target[parts[-1]] = source
        return out
