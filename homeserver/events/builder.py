"""Building signed PDUs, and the "Auth events selection" algorithm."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from .canonical import CANONICAL_INT_MAX, encode_canonical_json, normalise_numbers
from .hashing import add_content_hash, compute_event_id
from .redaction import redact_event
from .room_versions import RoomVersion
from .signing import sign_event

#: Depth saturates at the canonical JSON integer limit (PDU ``depth`` schema).
MAX_DEPTH = CANONICAL_INT_MAX

StateKey = tuple[str, str]


def auth_event_types(
    room_version: RoomVersion,
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
) -> list[StateKey]:
    """The ``(type, state_key)`` pairs an event's ``auth_events`` may cite.

    Server-server API "Auth events selection". Order is stable (create,
    power levels, sender, target, join rules, third-party invite, authoriser)
    and duplicates are removed.
    """
    if event_type == "m.room.create" and state_key == "":
        return []
    keys: list[StateKey] = []
    if room_version.create_event_in_auth_events:
        keys.append(("m.room.create", ""))
    keys.append(("m.room.power_levels", ""))
    keys.append(("m.room.member", sender))
    if event_type == "m.room.member" and state_key is not None:
        membership = content.get("membership")
        keys.append(("m.room.member", state_key))
        if membership in ("join", "invite", "knock"):
            keys.append(("m.room.join_rules", ""))
        if membership == "invite":
            tpi = content.get("third_party_invite")
            signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
            token = signed.get("token") if isinstance(signed, Mapping) else None
            if isinstance(token, str):
                keys.append(("m.room.third_party_invite", token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str):
                keys.append(("m.room.member", authoriser))
    seen: set[StateKey] = set()
    unique: list[StateKey] = []
    for key in keys:
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique


def select_auth_event_ids(
    room_version: RoomVersion,
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
    current_state: Mapping[StateKey, str],
) -> list[str]:
    """The event IDs to put in ``auth_events``, picked from the current state
    map of ``(type, state_key) -> event_id``."""
    return [
        current_state[key]
        for key in auth_event_types(room_version, event_type, state_key, sender, content)
        if key in current_state
    ]


def build_event(
    room_version: RoomVersion,
    *,
    room_id: str | None,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: SigningKey,
    state_key: str | None = None,
    redacts: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Build, hash and sign a PDU. Returns ``(event_id, pdu)``.

    * ``room_id`` must be ``None`` exactly for a v12 create event: its room ID
      is derived from its event ID afterwards (see
      :func:`~homeserver.events.hashing.room_id_from_create_event_id`).
    * ``redacts`` goes into ``content`` for v11+ (the PDU has no top-level
      ``redacts`` there), and at the top level for older versions.
    * For versions that still require ``content.creator`` on the create event
      it is filled in from ``sender`` if the caller left it out.
    * The returned PDU carries no ``event_id``: v4+ IDs are derived, never sent.
    """
    is_create = event_type == "m.room.create" and state_key == ""
    if room_version.room_id_is_create_event_id and is_create:
        if room_id is not None:
            raise ValueError("a v12 m.room.create event has no room_id")
    elif room_id is None:
        raise ValueError("room_id is required")
    if is_create and (prev_event_ids or auth_event_ids):
        raise ValueError("m.room.create has no prev_events or auth_events")

    body: dict[str, Any] = dict(content)
    if is_create and not room_version.implicit_room_creator:
        body.setdefault("creator", sender)
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": body,
        "prev_events": list(prev_event_ids),
        "auth_events": list(auth_event_ids),
        "depth": min(int(depth), MAX_DEPTH),
        "origin_server_ts": int(origin_server_ts),
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            body["redacts"] = redacts
        else:
            pdu["redacts"] = redacts

    # Fail early on floats and keep what we send byte-identical to what we hashed.
    pdu = normalise_numbers(pdu)
    if not room_version.event_id_is_reference_hash:  # pragma: no cover - all our versions are v4+
        signed = sign_event(room_version, pdu, server_name, signing_key)
        return compute_event_id(room_version, signed), signed
    # What sign_event then compute_event_id do, with one redaction and one canonical
    # encoding instead of two each (every local event comes through here): the bytes
    # a signature covers (the redacted event without `signatures` and `unsigned`) are
    # exactly the bytes the reference hash covers.
    signed = add_content_hash(pdu)
    redacted = redact_event(room_version, signed)
    message = encode_canonical_json({k: v for k, v in redacted.items() if k not in ("signatures", "unsigned")})
    key_id = f"{signing_key.alg}:{signing_key.version}"
    signed["signatures"] = {server_name: {key_id: encode_base64(signing_key.sign(message).signature)}}
    return "$" + encode_base64(hashlib.sha256(message).digest(), urlsafe=True), signed
