"""Ephemeral events between servers: typing (m.typing) and read receipts (m.receipt),
both ways (spec: Server-Server API, "Typing Notifications" and "Receipts").

An EDU about a user is accepted only from that user's own server, and only for a
room the user is joined to here.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.events import domain_of
from homeserver.sync.receipts import record_receipt

logger = logging.getLogger(__name__)

# Remote typing lasts this long unless the sender's server says it stopped sooner.
REMOTE_TYPING_TIMEOUT_MS = 30_000


class Edus:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    def register(self, handlers: dict[str, Any]) -> None:
        handlers["m.typing"] = self.on_typing
        handlers["m.receipt"] = self.on_receipt

    async def _joined(self, room_id: str, user_id: str) -> bool:
        membership = await self.hs.room_store.get_membership(room_id, user_id)
        return membership is not None and membership.membership == "join"

    # Outgoing

    async def typing_changed(self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None) -> None:
        sender = self.hs.federation.sender
        content: dict[str, Any] = {"room_id": room_id, "user_id": user_id, "typing": typing}
        if typing and timeout_ms:
            content["timeout"] = timeout_ms
        sender.send_edu(await sender.servers_in_room(room_id), "m.typing", content)

    async def receipt_sent(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, data: dict[str, Any]
    ) -> None:
        sender = self.hs.federation.sender
        entry: dict[str, Any] = {"event_ids": [event_id], "data": dict(data)}
        if thread_id:
            entry["data"]["thread_id"] = thread_id
        content = {room_id: {receipt_type: {user_id: entry}}}
        sender.send_edu(await sender.servers_in_room(room_id), "m.receipt", content)

    # Incoming

    async def on_typing(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
        if not isinstance(room_id, str) or not isinstance(user_id, str) or not isinstance(typing, bool):
            return
        if ":" not in user_id or domain_of(user_id) != origin or not await self._joined(room_id, user_id):
            return
        timeout = content.get("timeout")
        timeout_ms = timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else REMOTE_TYPING_TIMEOUT_MS
        self.hs.typing.set_typing(room_id, user_id, typing, timeout_ms)

    async def on_receipt(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            for receipt_type, by_user in by_type.items():
                if receipt_type != "m.read" or not isinstance(by_user, dict):
                    continue
                for user_id, entry in by_user.items():
                    await self._one_receipt(origin, room_id, user_id, entry)

    async def _one_receipt(self, origin: str, room_id: str, user_id: Any, entry: Any) -> None:
        if not isinstance(user_id, str) or ":" not in user_id or domain_of(user_id) != origin:
            return
        if not isinstance(entry, dict) or not await self._joined(room_id, user_id):
            return
        event_ids = entry.get("event_ids")
        data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
        if not isinstance(event_ids, list) or not event_ids or not isinstance(event_ids[-1], str):
            return
        event = await self.hs.events.get_event(event_ids[-1])
        if event is None or event.room_id != room_id:
            return
        thread_id = data.get("thread_id") if isinstance(data.get("thread_id"), str) else ""
        ts = data.get("ts") if isinstance(data.get("ts"), int) else 0
        await record_receipt(self.hs, room_id, "m.read", user_id, thread_id, event.event_id, {"ts": ts})
