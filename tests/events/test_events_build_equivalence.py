"""build_event signs and derives the event ID from one canonical encoding (a
performance shortcut): it must produce exactly what the general path does,
`sign_event` followed by `compute_event_id`, in every room version we build."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events import build_event, get_room_version
from homeserver.events.canonical import normalise_numbers
from homeserver.events.hashing import check_content_hash, compute_event_id
from homeserver.events.signing import (
    generate_signing_key,
    key_id_of,
    sign_event,
    verify_event_signature,
    verify_key_of,
)

KEY = generate_signing_key("t1")

CASES: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    ("m.room.message", {"body": "hi ☃", "n": 5, "nested": {"a": [1, 2.0, {"x": None}]}}, None, None),
    ("m.room.member", {"membership": "join", "displayname": "é"}, "@a:x", None),
    ("m.room.power_levels", {"users": {"@a:x": 100}, "events_default": 0}, "", None),
    ("m.room.redaction", {"reason": "spam"}, None, "$target"),
]


@pytest.mark.parametrize("version", ["10", "11", "12"])
@pytest.mark.parametrize("event_type,content,state_key,redacts", CASES)
def test_build_event_matches_sign_then_hash(
    version: str, event_type: str, content: dict[str, Any], state_key: str | None, redacts: str | None
) -> None:
    rv = get_room_version(version)
    event_id, pdu = build_event(
        rv,
        room_id="!r:x",
        sender="@a:x",
        event_type=event_type,
        state_key=state_key,
        content=content,
        prev_event_ids=["$p"],
        auth_event_ids=["$a"],
        depth=3,
        origin_server_ts=123,
        server_name="x",
        signing_key=KEY,
        redacts=redacts,
    )
    assert event_id == compute_event_id(rv, pdu)
    verify_event_signature(rv, pdu, "x", {key_id_of(KEY): verify_key_of(KEY)})
    assert check_content_hash(pdu)
    # ed25519 signatures are deterministic: the general path gives the same bytes.
    bare = {k: v for k, v in pdu.items() if k not in ("signatures", "hashes")}
    general = sign_event(rv, normalise_numbers(bare), "x", KEY)
    assert general == pdu
    assert compute_event_id(rv, general) == event_id
