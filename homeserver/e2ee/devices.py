"""The device store, extended so that deleting a device also deletes its keys and
queued to-device messages and tells other users' clients (device_lists.changed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from storage.database import Database
from storage.devices import DeviceStore

DeletedListener = Callable[[str, list[str]], Awaitable[None]]
RenamedListener = Callable[[str, str], Awaitable[None]]


class KeyAwareDeviceStore(DeviceStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.deleted_listeners: list[DeletedListener] = []
        self.renamed_listeners: list[RenamedListener] = []

    async def _deleted(self, user_id: str, device_ids: list[str]) -> None:
        if device_ids:
            for listener in self.deleted_listeners:
                await listener(user_id, device_ids)

    async def set_display_name(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        updated = await super().set_display_name(user_id, device_id, display_name)
        if updated:
            for listener in self.renamed_listeners:
                await listener(user_id, device_id)
        return updated

    async def delete_devices(self, user_id: str, device_ids: Iterable[str]) -> None:
        ids = list(device_ids)
        await super().delete_devices(user_id, ids)
        await self._deleted(user_id, ids)

    async def delete_other_devices(self, user_id: str, keep_device_id: str | None) -> None:
        ids = [d.device_id for d in await self.list_devices(user_id) if d.device_id != keep_device_id]
        await super().delete_other_devices(user_id, keep_device_id)
        await self._deleted(user_id, ids)
