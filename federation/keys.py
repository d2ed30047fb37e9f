"""This server's published keys: GET /_matrix/key/v2/server (spec: Server-Server API,
"Publishing Keys")."""

from __future__ import annotations

from typing import Any

from signedjson.types import SigningKey

from homeserver.events import encode_verify_key, key_id_of, sign_json, verify_key_of

# How long other servers may cache our key response. Short enough that a rotation
# spreads within a day.
KEY_VALIDITY_MS = 24 * 60 * 60 * 1000


def server_keys_response(
    server_name: str,
    signing_key: SigningKey,
    now_ms: int,
    old_verify_keys: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body = {
        "server_name": server_name,
        "valid_until_ts": now_ms + KEY_VALIDITY_MS,
        "verify_keys": {key_id_of(signing_key): {"key": encode_verify_key(verify_key_of(signing_key))}},
        "old_verify_keys": old_verify_keys or {},
    }
    return sign_json(body, server_name, signing_key)
