"""Content hashes, reference hashes and v4+ event IDs (server-server API,
"Calculating the content hash / reference hash for an event")."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Mapping

from unpaddedbase64 import decode_base64, encode_base64

from .canonical import encode_canonical_json
from .redaction import redact_event
from .room_versions import RoomVersion


def compute_content_hash(event: Mapping[str, Any]) -> bytes:
    """SHA-256 over the canonical JSON of the *unredacted* event.

    ``unsigned`` may be rewritten in transit, ``signatures`` depend on the hash,
    and an existing ``hashes`` must not feed into itself, so all three are left out.
    """
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(event: Mapping[str, Any]) -> dict[str, Any]:
    """Return a shallow copy of ``event`` with ``hashes.sha256`` set."""
    out = dict(event)
    out["hashes"] = {"sha256": encode_base64(compute_content_hash(event))}
    return out


def check_content_hash(event: Mapping[str, Any]) -> bool:
    """True if ``hashes.sha256`` is present and matches the event's content hash."""
    hashes = event.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        claimed_bytes = decode_base64(claimed)
    except Exception:
        return False
    return hmac.compare_digest(claimed_bytes, compute_content_hash(event))


def compute_reference_hash(room_version: RoomVersion, event: Mapping[str, Any]) -> bytes:
    """SHA-256 over the redacted event without ``signatures``/``unsigned``.

    Because it covers the redacted form, the ID of an event is stable across
    redaction, and because it covers ``hashes`` it still commits to the content.
    """
    redacted = redact_event(room_version, event)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def compute_event_id(room_version: RoomVersion, event: Mapping[str, Any]) -> str:
    """The event ID of a v4+ format event: ``$`` + URL-safe unpadded base64 of
    the reference hash."""
    if not room_version.event_id_is_reference_hash:  # pragma: no cover - all our versions are v4+
        raise ValueError(f"room version {room_version.identifier} does not derive event IDs")
    return "$" + encode_base64(compute_reference_hash(room_version, event), urlsafe=True)


def room_id_from_create_event_id(create_event_id: str) -> str:
    """v12: the room ID is the create event's ID with the ``!`` sigil."""
    if not create_event_id.startswith("$"):
        raise ValueError(f"not an event ID: {create_event_id!r}")
    return "!" + create_event_id[1:]


def create_event_id_from_room_id(room_id: str) -> str:
    """v12: the create event's ID is the room ID with the ``$`` sigil."""
    if not room_id.startswith("!"):
        raise ValueError(f"not a room ID: {room_id!r}")
    return "$" + room_id[1:]
