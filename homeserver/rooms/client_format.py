"""Events as clients see them (spec: Client-Server API, "Room event format").

Hashes, signatures, auth and prev events and depth are server business; `unsigned`
gets `age`, `transaction_id` (only for the device that sent it), `prev_content` for
state, and `redacted_because`; redacted events are served redacted.
"""

from __future__ import annotations

from typing import Any

from homeserver.events import RoomVersion, redact_event
from storage.events import StoredEvent

CLIENT_KEYS = ("content", "origin_server_ts", "room_id", "sender", "state_key", "type")


def client_event(
    event: StoredEvent,
    room_version: RoomVersion,
    now_ms: int,
    *,
    redaction: StoredEvent | None = None,
    transaction_id: str | None = None,
    include_room_id: bool = True,
    prev_event: StoredEvent | None = None,
) -> dict[str, Any]:
    """`prev_event` is the state event this one replaced, when the caller fetched it:
    its content, redacted if it was redacted since, becomes `prev_content`."""
    pdu = event.pdu
    if redaction is not None:
        pdu = redact_event(room_version, pdu)
    out: dict[str, Any] = {key: pdu[key] for key in CLIENT_KEYS if key in pdu}
    out["event_id"] = event.event_id
    if include_room_id:
        out["room_id"] = event.room_id
    else:
        out.pop("room_id", None)
    if "content" not in out:
        out["content"] = {}
    if pdu.get("type") == "m.room.redaction":
        # v11 moved redacts into content; clients written for older rooms still look
        # for it at the top level.
        target = pdu.get("redacts") or out["content"].get("redacts")
        if target is not None:
            out["redacts"] = target
    unsigned: dict[str, Any] = {"age": max(0, now_ms - int(pdu.get("origin_server_ts", now_ms)))}
    stored_unsigned = event.pdu.get("unsigned")
    if isinstance(stored_unsigned, dict) and "state_key" in pdu and redaction is None:
        # A redacted event keeps nothing of the state it replaced.
        for key in ("replaces_state", "prev_content", "prev_sender"):
            if key in stored_unsigned:
                unsigned[key] = stored_unsigned[key]
        if prev_event is not None and prev_event.event_id == stored_unsigned.get("replaces_state"):
            unsigned["prev_content"] = (
                redact_event(room_version, prev_event.pdu).get("content", {}) if prev_event.redacted_by else prev_event.content
            )
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    if redaction is not None:
        unsigned["redacted_because"] = client_event(redaction, room_version, now_ms)
    out["unsigned"] = unsigned
    return out
