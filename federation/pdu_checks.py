"""Checks on a PDU received from another server before it goes near a room:
format, event ID, signatures of every server that must have signed it, and the
content hash (a mismatch means we process the redacted event, as the spec says)."""

from __future__ import annotations

from typing import Any

from signedjson.types import VerifyKey

from federation.key_fetcher import KeyFetcher, KeyFetchError
from homeserver.events import (
    FormatError,
    RoomVersion,
    SignatureError,
    check_received_event,
    compute_event_id,
    required_signature_servers,
    validate_pdu_format,
)


class BadPdu(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def checked_pdu(keys: KeyFetcher, room_version: RoomVersion, pdu: Any) -> tuple[str, dict[str, Any]]:
    """(event_id, the PDU to process) or BadPdu."""
    if not isinstance(pdu, dict):
        raise BadPdu("PDU is not an object")
    pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
    try:
        validate_pdu_format(room_version, pdu)
    except FormatError as exc:
        raise BadPdu(f"malformed PDU: {exc.reason}") from None
    event_id = compute_event_id(room_version, pdu)
    keys_by_server: dict[str, dict[str, VerifyKey]] = {}
    signatures = pdu.get("signatures") if isinstance(pdu.get("signatures"), dict) else {}
    for server in required_signature_servers(room_version, pdu):
        server_sigs = signatures.get(server)
        if not isinstance(server_sigs, dict):
            raise BadPdu(f"not signed by {server}")
        for key_id in server_sigs:
            try:
                keys_by_server.setdefault(server, {})[key_id] = await keys.verify_key(
                    server, key_id, at_ms=int(pdu.get("origin_server_ts", 0))
                )
            except KeyFetchError:
                continue
    try:
        processed = check_received_event(room_version, pdu, keys_by_server)
    except SignatureError as exc:
        raise BadPdu(f"bad signature: {exc.reason}") from None
    return event_id, processed
