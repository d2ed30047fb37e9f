"""The room versions this server understands, as one table of behaviour flags.

Every other module in this package branches on the *flags* of a
:class:`RoomVersion`, never on its identifier, so that adding a room version is
a matter of adding one row to :data:`ROOM_VERSIONS`.
"""

from __future__ import annotations

import enum

import msgspec


class RedactionRules(enum.Enum):
    """Which generation of the redaction algorithm a room version uses."""

    #: Rules of room versions 9 and 10: keeps ``origin``/``membership``/``prev_state``.
    V9 = "v9"
    #: Rules introduced in room version 11 (MSC2176/MSC3821/MSC3989).
    V11 = "v11"


class StateResVersion(enum.Enum):
    """Which variant of state resolution a room version uses."""

    #: State resolution v2 (room versions 2 to 11).
    V2 = "v2"
    #: State resolution v2.1 (room version 12): starts the iterative auth checks
    #: from an empty state and adds the conflicted state subgraph.
    V2_1 = "v2.1"


class RoomVersion(msgspec.Struct, frozen=True):
    """Everything about a room version that the event logic depends on."""

    identifier: str
    redaction_rules: RedactionRules
    #: The creator is the create event's ``sender`` (v11+); earlier versions
    #: require ``content.creator`` on the create event.
    implicit_room_creator: bool
    #: The room ID is ``!`` + the create event's reference hash (v12). The create
    #: event then carries no ``room_id``.
    room_id_is_create_event_id: bool
    #: Whether ``m.room.create`` is selected into ``auth_events`` (not in v12,
    #: where the room ID implies it).
    create_event_in_auth_events: bool
    #: Room creators (create ``sender`` + ``additional_creators``) have an
    #: infinitely high power level and may not appear in ``users`` (v12).
    creators_have_infinite_power: bool
    #: Join rules / memberships supported.
    knock_join_rule: bool
    restricted_join_rule: bool
    knock_restricted_join_rule: bool
    #: Power level values must be integers, not strings (v10+).
    enforce_int_power_levels: bool
    #: ``notifications`` levels are subject to the power level change rules (v6+).
    limit_notifications_power_levels: bool
    #: ``m.room.redaction`` carries ``redacts`` in ``content`` (v11+) instead of
    #: at the top level.
    redacts_in_content: bool
    #: Event IDs are ``$`` + URL-safe base64 of the reference hash (v4+), and
    #: PDUs therefore carry no ``event_id`` key.
    event_id_is_reference_hash: bool
    #: JSON must be strictly canonical: integers in range, no floats (v6+).
    strict_canonical_json: bool
    state_res: StateResVersion


_V10 = RoomVersion(
    identifier="10",
    redaction_rules=RedactionRules.V9,
    implicit_room_creator=False,
    room_id_is_create_event_id=False,
    create_event_in_auth_events=True,
    creators_have_infinite_power=False,
    knock_join_rule=True,
    restricted_join_rule=True,
    knock_restricted_join_rule=True,
    enforce_int_power_levels=True,
    limit_notifications_power_levels=True,
    redacts_in_content=False,
    event_id_is_reference_hash=True,
    strict_canonical_json=True,
    state_res=StateResVersion.V2,
)

_V11 = RoomVersion(
    identifier="11",
    redaction_rules=RedactionRules.V11,
    implicit_room_creator=True,
    room_id_is_create_event_id=False,
    create_event_in_auth_events=True,
    creators_have_infinite_power=False,
    knock_join_rule=True,
    restricted_join_rule=True,
    knock_restricted_join_rule=True,
    enforce_int_power_levels=True,
    limit_notifications_power_levels=True,
    redacts_in_content=True,
    event_id_is_reference_hash=True,
    strict_canonical_json=True,
    state_res=StateResVersion.V2,
)

_V12 = RoomVersion(
    identifier="12",
    redaction_rules=RedactionRules.V11,
    implicit_room_creator=True,
    room_id_is_create_event_id=True,
    create_event_in_auth_events=False,
    creators_have_infinite_power=True,
    knock_join_rule=True,
    restricted_join_rule=True,
    knock_restricted_join_rule=True,
    enforce_int_power_levels=True,
    limit_notifications_power_levels=True,
    redacts_in_content=True,
    event_id_is_reference_hash=True,
    strict_canonical_json=True,
    state_res=StateResVersion.V2_1,
)

#: The single source of truth for per-version behaviour.
ROOM_VERSIONS: dict[str, RoomVersion] = {v.identifier: v for v in (_V10, _V11, _V12)}

#: The version used for new rooms when the client does not ask for one.
DEFAULT_ROOM_VERSION = "12"


class UnsupportedRoomVersion(ValueError):
    """Raised when a room version identifier is not in :data:`ROOM_VERSIONS`."""


def get_room_version(identifier: str) -> RoomVersion:
    """Look up a room version by identifier, raising :class:`UnsupportedRoomVersion`."""
    try:
        return ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(f"unsupported room version {identifier!r}") from None
