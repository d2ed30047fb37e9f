"""Event format validation and the authorisation rules of room versions 10-12.

Three separate entry points mirror the receipt checks of the server-server
spec, because they need different inputs:

* :func:`validate_pdu_format` - check 1, "is a valid event" (no state needed);
* :func:`check_auth_events` - auth rule "Considering the event's auth_events"
  (needs the events the PDU cites);
* :func:`check_auth` - every other auth rule, against a state map (the auth
  events, the state before the event, or the current state).

Cryptographic signature checks live in :mod:`.signing`; here we only check
that a required signature block is *present*.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

from .builder import auth_event_types
from .canonical import CanonicalJsonError, check_canonical_values, encode_canonical_json, is_canonical_int
from .hashing import compute_event_id, create_event_id_from_room_id
from .ids import MAX_ID_BYTES, domain_of, is_valid_user_id
from .power_levels import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    PowerLevel,
    as_level,
    named_level,
    required_event_level,
    room_creators,
    user_power_level,
)
from .room_versions import ROOM_VERSIONS, RoomVersion

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, Mapping[str, Any]]

#: Whole-PDU size limit in bytes of canonical JSON, signatures included.
MAX_PDU_SIZE = 65536
MAX_AUTH_EVENTS = 10
MAX_PREV_EVENTS = 20

JOIN_RULES_KEY = ("m.room.join_rules", "")

# v12 room IDs: "!" + URL-safe unpadded base64 of a sha256 (43 chars).
_HASH_ROOM_ID = re.compile(r"^![A-Za-z0-9\-_]{43}$")

_NAMED_LEVELS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")


class AuthError(Exception):
    """The event is not authorised (it should be rejected / soft-failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormatError(ValueError):
    """The PDU does not match its room version's event format (drop it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- format ----------------------------------------------------------------


def _require(cond: bool, reason: str) -> None:
    if not cond:
        raise FormatError(reason)


def _is_id_list(value: Any, sigil: str) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.startswith(sigil) for v in value)


def validate_pdu_format(room_version: RoomVersion, pdu: Any) -> None:
    """Check a PDU has the keys and value types its room version requires.

    Raises :class:`FormatError`. Does not check signatures, hashes or auth.
    """
    _require(isinstance(pdu, Mapping), "PDU is not an object")
    if room_version.strict_canonical_json:
        try:
            check_canonical_values(pdu)
        except CanonicalJsonError as e:
            raise FormatError(f"not canonical JSON: {e}") from None
    if room_version.event_id_is_reference_hash:
        # The ID is derived from the content; a claimed one could only mislead.
        _require("event_id" not in pdu, "PDU must not carry an event_id in this room version")

    _require(isinstance(pdu.get("type"), str), "type must be a string")
    _require(isinstance(pdu.get("sender"), str), "sender must be a string")
    _require(is_valid_user_id(pdu["sender"]), "sender is not a valid user ID")
    _require(is_canonical_int(pdu.get("origin_server_ts")), "origin_server_ts must be an integer")
    _require(is_canonical_int(pdu.get("depth")), "depth must be an integer")
    _require(isinstance(pdu.get("content"), Mapping), "content must be an object")
    if "state_key" in pdu:
        _require(isinstance(pdu["state_key"], str), "state_key must be a string")
    if "unsigned" in pdu:
        _require(isinstance(pdu["unsigned"], Mapping), "unsigned must be an object")

    hashes = pdu.get("hashes")
    _require(isinstance(hashes, Mapping) and isinstance(hashes.get("sha256"), str), "hashes.sha256 missing")
    signatures = pdu.get("signatures")
    _require(isinstance(signatures, Mapping), "signatures must be an object")
    for server_sigs in signatures.values():
        _require(
            isinstance(server_sigs, Mapping) and all(isinstance(s, str) for s in server_sigs.values()),
            "signatures must map servers to key IDs to strings",
        )

    _require(_is_id_list(pdu.get("auth_events"), "$"), "auth_events must be a list of event IDs")
    _require(_is_id_list(pdu.get("prev_events"), "$"), "prev_events must be a list of event IDs")
    _require(len(pdu["auth_events"]) <= MAX_AUTH_EVENTS, "too many auth_events")
    _require(len(pdu["prev_events"]) <= MAX_PREV_EVENTS, "too many prev_events")

    is_create = pdu["type"] == "m.room.create" and pdu.get("state_key") == ""
    if room_version.room_id_is_create_event_id:
        # A v12 create has no room_id; whether it wrongly has one is an auth
        # rule (1.2), so it is left to check_auth rather than dropped here.
        if not is_create:
            room_id = pdu.get("room_id")
            _require(isinstance(room_id, str) and bool(_HASH_ROOM_ID.match(room_id)), "invalid room_id")
    else:
        room_id = pdu.get("room_id")
        _require(isinstance(room_id, str) and room_id.startswith("!") and ":" in room_id, "invalid room_id")

    if pdu["type"] == "m.room.redaction":
        if room_version.redacts_in_content:
            if "redacts" in pdu["content"]:
                _require(isinstance(pdu["content"]["redacts"], str), "content.redacts must be a string")
        elif "redacts" in pdu:
            _require(isinstance(pdu["redacts"], str), "redacts must be a string")


def check_size_limits(event: Mapping[str, Any], event_id: str | None = None) -> None:
    """The client-server "Size limits": 64 KiB for the whole PDU and 255 bytes
    for ``sender``, ``room_id``, ``state_key``, ``type`` and the event ID."""
    try:
        size = len(encode_canonical_json(event))
    except (CanonicalJsonError, TypeError, ValueError):
        raise AuthError("event is not encodable as canonical JSON") from None
    if size > MAX_PDU_SIZE:
        raise AuthError(f"event is {size} bytes, over the {MAX_PDU_SIZE} byte limit")
    fields = {k: event.get(k) for k in ("sender", "room_id", "state_key", "type")}
    fields["event_id"] = event_id if event_id is not None else event.get("event_id")
    for name, value in fields.items():
        if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise AuthError(f"{name} exceeds {MAX_ID_BYTES} bytes")


# --- auth_events -------------------------------------------------------------


def check_auth_events(
    room_version: RoomVersion,
    event: Mapping[str, Any],
    auth_events: Mapping[str, Mapping[str, Any]],
    *,
    rejected_event_ids: Collection[str] = frozenset(),
    create_event: Mapping[str, Any] | None = None,
) -> dict[StateKey, Mapping[str, Any]]:
    """Auth rule "Considering the event's auth_events", returning the auth state.

    ``auth_events`` maps each ID in ``event["auth_events"]`` to its event. For
    versions whose room ID names the create event (v12) pass that event as
    ``create_event``; it is added to the returned state map, which is then fit
    for :func:`check_auth`.
    """
    if event.get("type") == "m.room.create":
        return {}
    state_key = event.get("state_key")
    content = _content(event)
    allowed = set(
        auth_event_types(room_version, event.get("type", ""), state_key, event.get("sender", ""), content)
    )
    room_id = event.get("room_id")
    state: dict[StateKey, Mapping[str, Any]] = {}
    for auth_id in event.get("auth_events", []):
        auth_ev = auth_events.get(auth_id)
        if auth_ev is None:
            raise AuthError(f"auth event {auth_id} is unknown")
        key = (auth_ev.get("type"), auth_ev.get("state_key"))
        if not isinstance(key[1], str):
            raise AuthError(f"auth event {auth_id} is not a state event")
        if key in state:
            raise AuthError(f"duplicate auth events for {key}")
        if key not in allowed:
            raise AuthError(f"auth event {auth_id} of {key} is not selected for this event")
        if auth_id in rejected_event_ids:
            raise AuthError(f"auth event {auth_id} was rejected")
        if auth_ev.get("room_id") != room_id:
            raise AuthError(f"auth event {auth_id} belongs to another room")
        state[key] = auth_ev
    if room_version.room_id_is_create_event_id:
        if create_event is None:
            raise AuthError("the room's create event is unknown")
        state[CREATE_KEY] = create_event
    elif CREATE_KEY not in state:
        raise AuthError("no m.room.create event among the auth events")
    return state


# --- helpers ---------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is an object, else an empty one (malformed input is
    judged by the rules, never crashes them)."""
    return value if isinstance(value, Mapping) else {}


def _content(event: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if event is None else _mapping(event.get("content"))


def _membership(state: StateMap, user_id: str) -> str | None:
    membership = _content(state.get(("m.room.member", user_id))).get("membership")
    return membership if isinstance(membership, str) else None


def _join_rule(state: StateMap) -> str:
    # The spec gives no default; like Synapse we treat a missing join rule as
    # "invite" (the least permissive rule that still honours invites), since
    # divergence here would split rooms between implementations.
    rule = _content(state.get(JOIN_RULES_KEY)).get("join_rule", "invite")
    return rule if isinstance(rule, str) else "invite"


def _domain(user_id: Any) -> str | None:
    if not isinstance(user_id, str):
        return None
    try:
        return domain_of(user_id)
    except ValueError:
        return None


def _has_signature_from(event: Mapping[str, Any], server: str) -> bool:
    signatures = event.get("signatures")
    return isinstance(signatures, Mapping) and isinstance(signatures.get(server), Mapping) and bool(signatures[server])


class _Levels:
    """Power lookups against one state map, for one check."""

    def __init__(self, room_version: RoomVersion, state: StateMap) -> None:
        self.room_version = room_version
        self.create = state.get(CREATE_KEY)
        self.pl = state.get(POWER_LEVELS_KEY)

    def user(self, user_id: str) -> PowerLevel:
        return user_power_level(self.room_version, user_id, self.create, self.pl)

    def named(self, name: str) -> int:
        return named_level(self.pl, name)


# --- rules -------------------------------------------------------------------


def _check_create(room_version: RoomVersion, event: Mapping[str, Any]) -> None:
    if event.get("prev_events"):
        raise AuthError("m.room.create has prev_events")
    if room_version.room_id_is_create_event_id:
        if "room_id" in event:
            raise AuthError("m.room.create must not have a room_id in this room version")
    else:
        room_domain = _domain(event.get("room_id"))
        if room_domain is None or room_domain != _domain(event.get("sender")):
            raise AuthError("m.room.create room_id domain does not match sender")
    content = _content(event)
    if "room_version" in content and content["room_version"] not in ROOM_VERSIONS:
        raise AuthError(f"unrecognised room_version {content['room_version']!r}")
    if not room_version.implicit_room_creator and "creator" not in content:
        raise AuthError("m.room.create has no creator")
    if room_version.creators_have_infinite_power and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("additional_creators must be a list of valid user IDs")


def _verify_third_party_signed(signed: Mapping[str, Any], tpi_event: Mapping[str, Any]) -> bool:
    """True if any signature in ``signed`` verifies with any public key of the
    ``m.room.third_party_invite`` event (``public_key`` or ``public_keys``)."""
    # Imported here: .signing pulls in nacl, which only this rule needs.
    from .signing import SignatureError, decode_verify_key, verify_json

    content = _content(tpi_event)
    public_keys: list[str] = []
    if isinstance(content.get("public_key"), str):
        public_keys.append(content["public_key"])
    for entry in content.get("public_keys") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
            public_keys.append(entry["public_key"])
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    for server, key_sigs in signatures.items():
        if not isinstance(key_sigs, Mapping):
            continue
        for key_id in key_sigs:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            for public_key in public_keys:
                try:
                    verify_key = decode_verify_key(key_id, public_key)
                    verify_json(signed, server, {key_id: verify_key})
                except (SignatureError, ValueError, TypeError):
                    continue
                return True
    return False


def _check_third_party_invite(event: Mapping[str, Any], state: StateMap, target: str) -> None:
    if _membership(state, target) == "ban":
        raise AuthError("target user is banned")
    tpi = _content(event).get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed lacks mxid or token")
    if mxid != target:
        raise AuthError("third_party_invite mxid does not match state_key")
    tpi_event = state.get(("m.room.third_party_invite", token))
    if tpi_event is None:
        raise AuthError("no m.room.third_party_invite for this token")
    if tpi_event.get("sender") != event.get("sender"):
        raise AuthError("sender does not match the third party invite's sender")
    if not _verify_third_party_signed(signed, tpi_event):
        raise AuthError("third_party_invite signature does not match any public key")


def _check_member(
    room_version: RoomVersion,
    event: Mapping[str, Any],
    state: StateMap,
    create_event_id: str,
) -> None:
    content = _content(event)
    target = event.get("state_key")
    membership = content.get("membership")
    if not isinstance(target, str) or "membership" not in content:
        raise AuthError("membership event lacks state_key or content.membership")
    sender: str = event["sender"]
    levels = _Levels(room_version, state)

    authoriser = content.get("join_authorised_via_users_server")
    if room_version.restricted_join_rule and "join_authorised_via_users_server" in content:
        server = _domain(authoriser)
        if server is None or not _has_signature_from(event, server):
            raise AuthError("not signed by the server of join_authorised_via_users_server")

    sender_membership = _membership(state, sender)
    target_membership = _membership(state, target)

    if membership == "join":
        # The creator's own first join, directly after the create event.
        prev = event.get("prev_events")
        if isinstance(prev, list) and len(prev) == 1 and prev[0] == create_event_id:
            create = state.get(CREATE_KEY) or {}
            creator = create.get("sender") if room_version.implicit_room_creator else _content(create).get("creator")
            if target == creator:
                return
        if sender != target:
            raise AuthError("cannot join on behalf of another user")
        if sender_membership == "ban":
            raise AuthError("sender is banned")
        join_rule = _join_rule(state)
        if join_rule == "invite" or (join_rule == "knock" and room_version.knock_join_rule):
            if sender_membership in ("invite", "join"):
                return
            raise AuthError("room is invite-only and sender is not invited")
        if (join_rule == "restricted" and room_version.restricted_join_rule) or (
            join_rule == "knock_restricted" and room_version.knock_restricted_join_rule
        ):
            if sender_membership in ("join", "invite"):
                return
            if (
                not isinstance(authoriser, str)
                or _membership(state, authoriser) != "join"
                or levels.user(authoriser) < levels.named("invite")
            ):
                raise AuthError("join_authorised_via_users_server cannot authorise this join")
            return
        if join_rule == "public":
            return
        raise AuthError(f"cannot join a room with join rule {join_rule!r}")

    if membership == "invite":
        if "third_party_invite" in content:
            _check_third_party_invite(event, state, target)
            return
        if sender_membership != "join":
            raise AuthError("inviter is not joined")
        if target_membership in ("join", "ban"):
            raise AuthError(f"invitee is already {target_membership}")
        if levels.user(sender) >= levels.named("invite"):
            return
        raise AuthError("insufficient power to invite")

    if membership == "leave":
        if sender == target:
            allowed = ("invite", "join", "knock") if room_version.knock_join_rule else ("invite", "join")
            if sender_membership in allowed:
                return
            raise AuthError("cannot leave a room one is not in")
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = levels.user(sender)
        if target_membership == "ban" and sender_level < levels.named("ban"):
            raise AuthError("insufficient power to unban")
        if sender_level >= levels.named("kick") and levels.user(target) < sender_level:
            return
        raise AuthError("insufficient power to kick")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = levels.user(sender)
        if sender_level >= levels.named("ban") and levels.user(target) < sender_level:
            return
        raise AuthError("insufficient power to ban")

    if membership == "knock" and room_version.knock_join_rule:
        join_rule = _join_rule(state)
        if not (join_rule == "knock" or (join_rule == "knock_restricted" and room_version.knock_restricted_join_rule)):
            raise AuthError("room does not allow knocking")
        if sender != target:
            raise AuthError("cannot knock on behalf of another user")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError(f"cannot knock while {sender_membership}")

    raise AuthError(f"unknown membership {membership!r}")


def _is_int_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(is_canonical_int(v) for v in value.values())


def _check_power_levels(room_version: RoomVersion, event: Mapping[str, Any], state: StateMap) -> None:
    new = _content(event)
    if room_version.enforce_int_power_levels:
        for name in _NAMED_LEVELS:
            if name in new and not is_canonical_int(new[name]):
                raise AuthError(f"power level {name!r} is not an integer")
        for name in ("events", "notifications"):
            if name in new and not _is_int_map(new[name]):
                raise AuthError(f"power levels {name!r} must map to integers")
    users = new.get("users", {})
    if not isinstance(users, Mapping) or not all(is_valid_user_id(u) for u in users):
        raise AuthError("power levels 'users' must map valid user IDs")
    if room_version.enforce_int_power_levels and not _is_int_map(users):
        raise AuthError("power levels 'users' values must be integers")
    if room_version.creators_have_infinite_power:
        creators = room_creators(room_version, state.get(CREATE_KEY))
        if creators.intersection(users):
            raise AuthError("room creators cannot be listed in power levels 'users'")

    old_event = state.get(POWER_LEVELS_KEY)
    if old_event is None:
        return
    old = _content(old_event)
    sender: str = event["sender"]
    sender_level = _Levels(room_version, state).user(sender)

    for name in _NAMED_LEVELS:
        if (name in old) != (name in new) or old.get(name) != new.get(name):
            if name in old and as_level(old[name], 0) > sender_level:
                raise AuthError(f"cannot change {name!r} from a level above your own")
            if name in new and as_level(new[name], 0) > sender_level:
                raise AuthError(f"cannot set {name!r} above your own level")

    maps = ["events"] + (["notifications"] if room_version.limit_notifications_power_levels else [])
    for name in maps:
        old_map = _mapping(old.get(name))
        new_map = _mapping(new.get(name))
        for key in set(old_map) | set(new_map):
            if key in old_map and (key not in new_map or new_map[key] != old_map[key]):
                if as_level(old_map[key], 0) > sender_level:
                    raise AuthError(f"cannot change {name}[{key!r}] from a level above your own")
            if key in new_map and (key not in old_map or old_map[key] != new_map[key]):
                if as_level(new_map[key], 0) > sender_level:
                    raise AuthError(f"cannot set {name}[{key!r}] above your own level")

    old_users = _mapping(old.get("users"))
    for user in set(old_users) | set(users):
        if user in old_users and (user not in users or users[user] != old_users[user]):
            if user != sender and as_level(old_users[user], 0) >= sender_level:
                raise AuthError(f"cannot change the level of {user}, who is not below you")
        if user in users and (user not in old_users or old_users[user] != users[user]):
            if as_level(users[user], 0) > sender_level:
                raise AuthError(f"cannot give {user} a level above your own")


def check_auth(
    room_version: RoomVersion,
    event: Mapping[str, Any],
    auth_state: StateMap,
    *,
    enforce_size_limits: bool = True,
    create_event_id: str | None = None,
) -> None:
    """Apply the authorisation rules to ``event`` against ``auth_state``.

    ``auth_state`` maps ``(type, state_key)`` to event dicts. It must include
    the room's create event (also in v12, where ``auth_events`` omits it).
    ``create_event_id`` may be passed when the caller already knows it, to
    avoid re-hashing the create event. Raises :class:`AuthError`.
    """
    if enforce_size_limits:
        check_size_limits(event)
    sender = event.get("sender")
    if not isinstance(sender, str):
        raise AuthError("event has no sender")

    if event.get("type") == "m.room.create":
        _check_create(room_version, event)
        return

    create = auth_state.get(CREATE_KEY)
    if create is None:
        raise AuthError("no m.room.create event in the auth state")
    if create_event_id is None:
        create_event_id = compute_event_id(room_version, create)
    room_id = event.get("room_id")
    if room_version.room_id_is_create_event_id:
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise AuthError("event has no valid room_id")
        if create_event_id_from_room_id(room_id) != create_event_id:
            raise AuthError("room_id is not the ID of the room's create event")
    elif create.get("room_id") != room_id:
        raise AuthError("create event belongs to another room")

    if _content(create).get("m.federate") is False and _domain(sender) != _domain(create.get("sender")):
        raise AuthError("room is not federated and sender is from another server")

    event_type = event.get("type")
    if event_type == "m.room.member":
        _check_member(room_version, event, auth_state, create_event_id)
        return

    if _membership(auth_state, sender) != "join":
        raise AuthError("sender is not joined to the room")

    levels = _Levels(room_version, auth_state)
    sender_level = levels.user(sender)
    if event_type == "m.room.third_party_invite":
        if sender_level >= levels.named("invite"):
            return
        raise AuthError("insufficient power to send third party invites")

    if not isinstance(event_type, str):
        raise AuthError("event has no type")
    state_key = event.get("state_key")
    if required_event_level(levels.pl, event_type, state_key is not None) > sender_level:
        raise AuthError(f"insufficient power to send {event_type}")

    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
        raise AuthError("state_key names another user")

    if event_type == "m.room.power_levels":
        _check_power_levels(room_version, event, auth_state)


def redaction_allowed(
    room_version: RoomVersion,
    redaction: Mapping[str, Any],
    redacted_event: Mapping[str, Any],
    auth_state: StateMap,
) -> bool:
    """Rooms v3+ "Handling redactions": whether to *apply* an authorised redaction.

    The auth rules admit redactions like any other event (the redact level
    is not part of them); the redact level only matters here: the sender must
    reach it, or be on the same server as the redacted event's sender.
    """
    sender = redaction.get("sender")
    if not isinstance(sender, str):
        return False
    levels = _Levels(room_version, auth_state)
    if levels.user(sender) >= levels.named("redact"):
        return True
    sender_domain = _domain(sender)
    return sender_domain is not None and sender_domain == _domain(redacted_event.get("sender"))
