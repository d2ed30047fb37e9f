"""Wiring of the real-time machinery into the `HomeServer` (kept here so that
`homeserver.py` only calls in)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.e2ee.service import E2eeService
from homeserver.sync.cache import SyncCache
from homeserver.sync.notifier import Notifier
from homeserver.sync.presence import Presence
from homeserver.sync.service import SyncService
from homeserver.sync.typing import Typing
from storage.e2e_keys import E2eKeyStore
from storage.filters import FilterStore
from storage.key_backup import KeyBackupStore
from storage.presence import PresenceStore
from storage.receipts import ReceiptStore
from storage.streams import current_positions
from storage.sync import SyncQueries
from storage.to_device import ToDeviceStore

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer


def wire_sync(hs: HomeServer) -> None:
    db = hs.db
    hs.notifier = Notifier()
    hs.sync_queries = SyncQueries(db)
    hs.sync_cache = SyncCache(hs)
    hs.filters = FilterStore(db)
    hs.receipts = ReceiptStore(db)
    hs.to_device = ToDeviceStore(db)
    hs.e2e_keys = E2eKeyStore(db)
    hs.key_backup = KeyBackupStore(db)
    hs.typing = Typing(hs.notifier)
    hs.presence = Presence(
        hs.config.presence.enabled, PresenceStore(db), hs.sync_queries, hs.notifier, hs.sync_cache.joined_room_ids
    )
    hs.e2ee = E2eeService(hs)
    hs.sync = SyncService(hs)
    hs.room_events.listeners.append(hs.sync.on_event)
    hs.account_data.listeners.append(hs.sync.on_account_data)
    hs.devices.deleted_listeners.append(hs.e2ee.devices_deleted)
    hs.devices.renamed_listeners.append(hs.e2ee.device_renamed)


async def start_sync(hs: HomeServer) -> None:
    """After migrations: stream positions from the database, presence timers."""
    hs.notifier.load(await current_positions(hs.db))
    await hs.presence.start()


async def stop_sync(hs: HomeServer) -> None:
    hs.notifier.wake_all()
    await hs.presence.stop()
