"""The redaction algorithm (rooms v9 "Redactions" fragment and v11 "Redactions").

Redaction is what makes signatures survive a redacted copy of an event: the
signature covers exactly the keys that this algorithm keeps.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from .room_versions import RedactionRules, RoomVersion

# Top-level keys kept by each generation. v11 dropped origin/membership/prev_state.
_TOP_LEVEL_KEYS: dict[RedactionRules, frozenset[str]] = {
    RedactionRules.V9: frozenset(
        {
            "event_id",
            "type",
            "room_id",
            "sender",
            "state_key",
            "content",
            "hashes",
            "signatures",
            "depth",
            "prev_events",
            "prev_state",
            "auth_events",
            "origin",
            "origin_server_ts",
            "membership",
        }
    ),
    RedactionRules.V11: frozenset(
        {
            "event_id",
            "type",
            "room_id",
            "sender",
            "state_key",
            "content",
            "hashes",
            "signatures",
            "depth",
            "prev_events",
            "auth_events",
            "origin_server_ts",
        }
    ),
}

_POWER_LEVEL_KEYS_V9 = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

# Content keys kept per event type. ``None`` means "keep all of content".
_CONTENT_KEYS: dict[RedactionRules, dict[str, frozenset[str] | None]] = {
    RedactionRules.V9: {
        "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
        "m.room.create": frozenset({"creator"}),
        "m.room.join_rules": frozenset({"join_rule", "allow"}),
        "m.room.power_levels": _POWER_LEVEL_KEYS_V9,
        "m.room.history_visibility": frozenset({"history_visibility"}),
    },
    RedactionRules.V11: {
        "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
        # v11: the create event is never redacted, since its content defines the room.
        "m.room.create": None,
        "m.room.join_rules": frozenset({"join_rule", "allow"}),
        "m.room.power_levels": _POWER_LEVEL_KEYS_V9 | {"invite"},
        "m.room.history_visibility": frozenset({"history_visibility"}),
        # v11 moved ``redacts`` into content, so it must survive redaction.
        "m.room.redaction": frozenset({"redacts"}),
    },
}


def top_level_keys_kept(room_version: RoomVersion) -> frozenset[str]:
    """The top-level keys that survive redaction in ``room_version``."""
    return _TOP_LEVEL_KEYS[room_version.redaction_rules]


def _redact_content(rules: RedactionRules, event_type: Any, content: Any) -> dict[str, Any]:
    if not isinstance(content, Mapping):
        return {}
    allowed = _CONTENT_KEYS[rules].get(event_type, frozenset()) if isinstance(event_type, str) else frozenset()
    if allowed is None:
        return copy.deepcopy(dict(content))
    kept = {k: copy.deepcopy(v) for k, v in content.items() if k in allowed}
    if rules is RedactionRules.V11 and event_type == "m.room.member":
        # v11 keeps ``third_party_invite.signed`` so the invite's auth check
        # (which verifies that signature) still works on a redacted copy.
        # Like Synapse, an object without ``signed`` is reduced to ``{}``.
        tpi = content.get("third_party_invite")
        if isinstance(tpi, Mapping):
            kept["third_party_invite"] = (
                {"signed": copy.deepcopy(tpi["signed"])} if "signed" in tpi else {}
            )
    return kept


def redact_event(room_version: RoomVersion, event: Mapping[str, Any]) -> dict[str, Any]:
    """Return a redacted deep copy of ``event``; the input is not modified."""
    rules = room_version.redaction_rules
    keep = _TOP_LEVEL_KEYS[rules]
    out = {k: copy.deepcopy(v) for k, v in event.items() if k in keep and k != "content"}
    out["content"] = _redact_content(rules, event.get("type"), event.get("content"))
    return out


def redaction_target(room_version: RoomVersion, redaction: Mapping[str, Any]) -> str | None:
    """The event ID an ``m.room.redaction`` event redacts, if well formed.

    v11+ reads ``content.redacts``; older versions read the top-level key.
    """
    if room_version.redacts_in_content:
        content = redaction.get("content")
        target = content.get("redacts") if isinstance(content, Mapping) else None
    else:
        target = redaction.get("redacts")
    return target if isinstance(target, str) else None
