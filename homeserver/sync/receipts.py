"""Recording a read receipt: stored, announced to waiting syncs, and (for public
receipts of our own users) sent to the other servers in the room."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

# Private receipts never leave this server.
FEDERATED_RECEIPT_TYPES = ("m.read",)


async def record_receipt(
    hs: HomeServer, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, data: dict[str, Any]
) -> None:
    position = await hs.receipts.put(room_id, receipt_type, user_id, thread_id, event_id, data)
    # Unread counts follow the read mark before any sync is woken.
    await hs.push_actions.receipt_moved(user_id, room_id, receipt_type, thread_id)
    hs.sync_cache.receipt_written(user_id, room_id)
    hs.notifier.advance("receipts", position)
    hs.notifier.wake_rooms([room_id])
    if hs.federation is not None and receipt_type in FEDERATED_RECEIPT_TYPES and hs.is_local_user(user_id):
        await hs.federation.edus.receipt_sent(room_id, receipt_type, user_id, thread_id, event_id, data)
