"""Routes for /sync, the streams that feed it, and the E2EE key server."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from homeserver.api import keys, sync

V3 = "/_matrix/client/v3"


def sync_routes() -> list[BaseRoute]:
    room = f"{V3}/rooms/{{room_id}}"
    user = f"{V3}/user/{{user_id}}"
    backup_keys = f"{V3}/room_keys/keys"
    return [
        Route(f"{V3}/sync", sync.sync, methods=["GET"]),
        Route(f"{user}/filter", sync.create_filter, methods=["POST"]),
        Route(f"{user}/filter/{{filter_id}}", sync.get_filter, methods=["GET"]),
        Route(f"{room}/typing/{{user_id}}", sync.typing, methods=["PUT"]),
        Route(f"{room}/receipt/{{receipt_type}}/{{event_id}}", sync.receipt, methods=["POST"]),
        Route(f"{room}/read_markers", sync.read_markers, methods=["POST"]),
        Route(f"{user}/rooms/{{room_id}}/tags", sync.get_tags, methods=["GET"]),
        Route(f"{user}/rooms/{{room_id}}/tags/{{tag}}", sync.put_tag, methods=["PUT"]),
        Route(f"{user}/rooms/{{room_id}}/tags/{{tag}}", sync.delete_tag, methods=["DELETE"]),
        Route(f"{V3}/presence/{{user_id}}/status", sync.get_presence, methods=["GET"]),
        Route(f"{V3}/presence/{{user_id}}/status", sync.put_presence, methods=["PUT"]),
        Route(f"{V3}/sendToDevice/{{event_type}}/{{txn_id}}", sync.send_to_device, methods=["PUT"]),
        # E2EE keys
        Route(f"{V3}/keys/upload", keys.upload, methods=["POST"]),
        Route(f"{V3}/keys/query", keys.query, methods=["POST"]),
        Route(f"{V3}/keys/claim", keys.claim, methods=["POST"]),
        Route(f"{V3}/keys/changes", keys.changes, methods=["GET"]),
        Route(f"{V3}/keys/device_signing/upload", keys.device_signing_upload, methods=["POST"]),
        Route(f"{V3}/keys/signatures/upload", keys.signatures_upload, methods=["POST"]),
        # Key backup
        Route(f"{V3}/room_keys/version", keys.create_backup, methods=["POST"]),
        Route(f"{V3}/room_keys/version", keys.get_backup, methods=["GET"]),
        Route(f"{V3}/room_keys/version/{{version}}", keys.get_backup, methods=["GET"]),
        Route(f"{V3}/room_keys/version/{{version}}", keys.update_backup, methods=["PUT"]),
        Route(f"{V3}/room_keys/version/{{version}}", keys.delete_backup, methods=["DELETE"]),
        Route(backup_keys, keys.get_keys, methods=["GET"]),
        Route(backup_keys, keys.put_keys, methods=["PUT"]),
        Route(backup_keys, keys.delete_keys, methods=["DELETE"]),
        Route(f"{backup_keys}/{{room_id}}", keys.get_keys, methods=["GET"]),
        Route(f"{backup_keys}/{{room_id}}", keys.put_keys, methods=["PUT"]),
        Route(f"{backup_keys}/{{room_id}}", keys.delete_keys, methods=["DELETE"]),
        Route(f"{backup_keys}/{{room_id}}/{{session_id}}", keys.get_keys, methods=["GET"]),
        Route(f"{backup_keys}/{{room_id}}/{{session_id}}", keys.put_keys, methods=["PUT"]),
        Route(f"{backup_keys}/{{room_id}}/{{session_id}}", keys.delete_keys, methods=["DELETE"]),
    ]
