"""Signing and verifying JSON objects and events (appendices "Signing JSON",
server-server API "Signing Events")."""

from __future__ import annotations

import copy
from typing import Any, Mapping

import nacl.exceptions
import signedjson.key
import signedjson.sign
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64

from .canonical import encode_canonical_json, normalise_numbers
from .hashing import add_content_hash, check_content_hash
from .ids import domain_of
from .redaction import redact_event
from .room_versions import RoomVersion

#: Signature algorithms we can check; others are ignored, per "Checking for a Signature".
SUPPORTED_ALGORITHMS = frozenset({"ed25519"})


class SignatureError(Exception):
    """A required signature is missing or does not verify."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- keys ------------------------------------------------------------------


def signing_key_from_seed(seed_base64: str, key_version: str) -> SigningKey:
    """An ed25519 signing key from its unpadded-base64 32-byte seed."""
    return signedjson.key.decode_signing_key_base64("ed25519", key_version, seed_base64)


def generate_signing_key(key_version: str) -> SigningKey:
    """A fresh random ed25519 signing key."""
    return signedjson.key.generate_signing_key(key_version)


def key_id_of(key: SigningKey | VerifyKey) -> str:
    """``<algorithm>:<version>`` for a signedjson key."""
    return f"{key.alg}:{key.version}"


def verify_key_of(signing_key: SigningKey) -> VerifyKey:
    """The public half of a signing key."""
    return signedjson.key.get_verify_key(signing_key)


def decode_verify_key(key_id: str, key_base64: str) -> VerifyKey:
    """A verify key from its ID (``ed25519:abc``) and unpadded base64 bytes."""
    return signedjson.key.decode_verify_key_bytes(key_id, decode_base64(key_base64))


def encode_verify_key(verify_key: VerifyKey) -> str:
    """Unpadded base64 of a verify key's bytes."""
    return signedjson.key.encode_verify_key_base64(verify_key)


# --- generic JSON ----------------------------------------------------------


def sign_json(obj: Mapping[str, Any], signer: str, signing_key: SigningKey) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``signer``'s signature added.

    Existing signatures and ``unsigned`` are preserved but not covered by the
    signature, so intermediaries can add to them.
    """
    # signedjson encodes with canonicaljson directly; normalise numbers first so
    # the signed bytes are the spec's canonical form.
    out = dict(normalise_numbers(obj))
    # signedjson mutates the signatures dict it pops; never let that reach the caller's object.
    if "signatures" in out:
        out["signatures"] = copy.deepcopy(out["signatures"])
    return signedjson.sign.sign_json(out, signer, signing_key)


def _signed_bytes(obj: Mapping[str, Any]) -> bytes:
    return encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def verify_json(obj: Mapping[str, Any], signer: str, verify_keys: Mapping[str, VerifyKey]) -> None:
    """Check ``signer``'s signature on ``obj`` with the keys it is known to hold.

    ``verify_keys`` maps key IDs to keys (already filtered by the caller for
    validity at the relevant time). Signatures under unknown key IDs or
    unsupported algorithms are ignored; at least one known key must have
    signed, and every known key that signed must verify.
    """
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureError("object has no signatures")
    entity_sigs = signatures.get(signer)
    if not isinstance(entity_sigs, Mapping) or not entity_sigs:
        raise SignatureError(f"no signatures from {signer}")
    message: bytes | None = None
    checked = 0
    for key_id, sig_b64 in entity_sigs.items():
        if not isinstance(key_id, str) or key_id.split(":", 1)[0] not in SUPPORTED_ALGORITHMS:
            continue
        verify_key = verify_keys.get(key_id)
        if verify_key is None:
            continue
        if not isinstance(sig_b64, str):
            raise SignatureError(f"malformed signature {signer} {key_id}")
        try:
            sig = decode_base64(sig_b64)
        except Exception:
            raise SignatureError(f"undecodable signature {signer} {key_id}") from None
        if message is None:
            message = _signed_bytes(obj)
        try:
            verify_key.verify(message, sig)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise SignatureError(f"bad signature {signer} {key_id}") from None
        checked += 1
    if not checked:
        raise SignatureError(f"no signature from {signer} with a known key")


# --- events ----------------------------------------------------------------


def sign_event(
    room_version: RoomVersion, event: Mapping[str, Any], signer: str, signing_key: SigningKey
) -> dict[str, Any]:
    """Hash and sign an event the way the spec's ``hash_and_sign_event`` does.

    The content hash covers the full event; the signature covers only the
    redacted form (which includes the hash), so it stays checkable after a
    redaction. Returns a new event; ``event`` is untouched.
    """
    hashed = add_content_hash(event)
    signed_redacted = sign_json(redact_event(room_version, hashed), signer, signing_key)
    hashed["signatures"] = signed_redacted["signatures"]
    return hashed


def verify_event_signature(
    room_version: RoomVersion,
    event: Mapping[str, Any],
    server_name: str,
    verify_keys: Mapping[str, VerifyKey],
) -> None:
    """Check ``server_name``'s signature over the redacted form of ``event``.

    Works whether we hold the full event or an already-redacted copy.
    """
    verify_json(redact_event(room_version, event), server_name, verify_keys)


def required_signature_servers(room_version: RoomVersion, event: Mapping[str, Any]) -> set[str]:
    """Servers whose signature an event must carry (v3+ rules).

    The sender's server always, except for third-party invites whose sender
    matches the ``m.room.third_party_invite`` (so a different server may send
    them); plus, for restricted joins, the server of
    ``join_authorised_via_users_server`` (auth rule "validly signed by the
    homeserver of the user ID denoted by the key").
    """
    servers: set[str] = set()
    content = event.get("content")
    content = content if isinstance(content, Mapping) else {}
    is_member = event.get("type") == "m.room.member"
    is_3pid_invite = is_member and content.get("membership") == "invite" and "third_party_invite" in content
    sender = event.get("sender")
    if isinstance(sender, str) and not is_3pid_invite:
        servers.add(domain_of(sender))
    authoriser = content.get("join_authorised_via_users_server")
    if room_version.restricted_join_rule and is_member and isinstance(authoriser, str) and ":" in authoriser:
        servers.add(domain_of(authoriser))
    return servers


def verify_event_signatures(
    room_version: RoomVersion,
    event: Mapping[str, Any],
    keys_by_server: Mapping[str, Mapping[str, VerifyKey]],
) -> None:
    """Check every signature the event is required to carry.

    ``keys_by_server`` maps server name -> key ID -> verify key for the keys
    known (and unexpired at the event's ``origin_server_ts``) for each server.
    """
    redacted = redact_event(room_version, event)
    for server in sorted(required_signature_servers(room_version, event)):
        verify_json(redacted, server, keys_by_server.get(server, {}))


def check_received_event(
    room_version: RoomVersion,
    event: Mapping[str, Any],
    keys_by_server: Mapping[str, Mapping[str, VerifyKey]],
) -> dict[str, Any]:
    """Signature then hash checks for a PDU received over federation.

    Raises :class:`SignatureError` if signatures fail (the event is dropped).
    If only the content hash fails, the redacted copy is returned: the spec
    says to assume we were sent a redacted event and process that instead.
    """
    verify_event_signatures(room_version, event, keys_by_server)
    if check_content_hash(event):
        return dict(event)
    return redact_event(room_version, event)
