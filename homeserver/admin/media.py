"""Quarantine for media: quarantined media answers 404 to downloads and thumbnails,
local or remote, while its files stay on disk."""

from __future__ import annotations

from typing import Any

from homeserver.errors import not_found
from homeserver.media import MediaService
from storage.admin import AdminStore


class QuarantineAwareMediaService(MediaService):
    def __init__(self, *args: Any, admin_store: AdminStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admin_store = admin_store

    async def _refuse_quarantined(self, server_name: str, media_id: str) -> None:
        if await self.admin_store.is_quarantined(server_name, media_id):
            raise not_found("Media not found")

    async def download(self, server_name: str, media_id: str, *args: Any, **kwargs: Any) -> Any:
        await self._refuse_quarantined(server_name, media_id)
        return await super().download(server_name, media_id, *args, **kwargs)

    async def thumbnail(self, server_name: str, media_id: str, *args: Any, **kwargs: Any) -> Any:
        await self._refuse_quarantined(server_name, media_id)
        return await super().thumbnail(server_name, media_id, *args, **kwargs)
