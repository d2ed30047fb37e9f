"""Matrix identifier grammar (spec appendices: identifier grammar)."""

from __future__ import annotations

import re
import secrets
import string

# Localparts of new users: lowercase letters, digits and ._=-/+ (spec v1.8+ grammar).
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
# Historical user IDs may hold any printable ASCII but ':'; accepted for existing users.
HISTORICAL_LOCALPART_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
MAX_USER_ID_LENGTH = 255

_DEVICE_ID_ALPHABET = string.ascii_uppercase


def user_id_for(localpart: str, server_name: str) -> str:
    return f"@{localpart}:{server_name}"


def split_user_id(user_id: str) -> tuple[str, str] | None:
    """(localpart, server name) of a well-formed user ID, or None."""
    if not user_id.startswith("@") or ":" not in user_id or len(user_id.encode()) > MAX_USER_ID_LENGTH:
        return None
    localpart, _, server = user_id[1:].partition(":")
    if not localpart or not server or not HISTORICAL_LOCALPART_RE.match(localpart):
        return None
    return localpart, server


def is_valid_user_id(user_id: str) -> bool:
    return split_user_id(user_id) is not None


def new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ID_ALPHABET) for _ in range(10))
