"""The running server: config, database, stores and services, wired once at start-up.

Handlers reach everything through `request.app.state.hs`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from signedjson.types import SigningKey

from homeserver import passwords
from homeserver.accounts import Accounts
from homeserver.admin.media import QuarantineAwareMediaService
from homeserver.config import Config
from homeserver.e2ee.devices import KeyAwareDeviceStore
from homeserver.media import ContentStore
from homeserver.push import wire_push_rules
from homeserver.push.delivery_wiring import (
    start_push_delivery,
    stop_push_delivery,
    wire_push_delivery,
)
from homeserver.ratelimit import RateLimiter
from homeserver.rooms.create import RoomCreator
from homeserver.rooms.directory import Directory
from homeserver.rooms.events import RoomEvents
from homeserver.rooms.membership import Membership
from homeserver.rooms.public_rooms import PublicRooms
from homeserver.rooms.reading import RoomReader
from homeserver.rooms.received import ReceivedEvents
from homeserver.signing_key import generate_signing_key_file, load_signing_key
from homeserver.sync.wiring import start_sync, stop_sync, wire_sync
from homeserver.uia import UserInteractiveAuth
from storage.account_data_stream import StreamedAccountDataStore
from storage.accounts import AccountStore
from storage.admin import AdminStore
from storage.database import Database
from storage.directory import AliasStore
from storage.events import EventStore
from storage.media import MediaStore
from storage.migrations import migrate
from storage.registration_tokens import RegistrationTokenStore
from storage.reports import ReportStore
from storage.rooms import RoomStore
from storage.state import StateStore
from storage.uia import UiaStore
from storage.user_directory import UserDirectoryStore

logger = logging.getLogger(__name__)


class HomeServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        passwords.configure(config.passwords.argon2_time_cost, config.passwords.argon2_memory_kib)
        self.server_name = config.server_name
        self.started_ms = int(time.time() * 1000)
        self.db = Database.open(config.database_url)
        self.accounts = AccountStore(self.db)
        self.devices = KeyAwareDeviceStore(self.db)
        self.accounts.user_changed.append(self.devices.forget_user)
        self.registration_tokens = RegistrationTokenStore(self.db)
        self.uia = UserInteractiveAuth(UiaStore(self.db))
        self.account_service = Accounts(config.server_name, self.accounts, self.devices)
        self.ratelimiter = RateLimiter(config.rate_limits.enabled)
        self.last_seen_written: dict[tuple[str, str], int] = {}
        self.signing_key: SigningKey | None = None
        self._wire_rooms(config)
        self.push_rules = wire_push_rules(self)
        # Before wire_sync: push counts are written before the sync listener wakes anyone.
        wire_push_delivery(self)
        wire_sync(self)
        self.account_service.delete_notifications = self._delete_notifications
        self.account_service.deactivated_listeners += [
            self.push_rules.forget,
            self.push_actions.forget,
            self.sync_cache.account_data_changed,
        ]
        self.federation: Any = None
        if config.federation.enabled:
            # Imported only when enabled: with federation off, federation/ stays unloaded.
            from federation.service import Federation

            self.federation = Federation(self, config.server_name, self._require_signing_key, config.federation)
            self.room_events.listeners.append(self.federation.sender.on_event)
            self.membership.remote_join = self.federation.joiner.join
            self.membership.remote_invite = self.federation.invites.countersign
            self.membership.remote_leave = self.federation.leaver.leave
            self.membership.remote_knock = self.federation.knocker.knock
            self.room_reader.backfill = self.federation.backfiller.backfill
            self.directory.remote_lookup = self.federation.query_alias
            self.public_rooms.remote = self.federation.public_rooms.query
        self.admin_store = AdminStore(self.db)

        async def room_blocked(room_id: str) -> bool:
            return await self.admin_store.room_blocked_by(room_id) is not None

        self.membership.room_blocked = room_blocked
        self.media = QuarantineAwareMediaService(
            config.server_name,
            MediaStore(self.db),
            ContentStore(config.media_path),
            max_upload_bytes=config.limits.max_upload_bytes,
            max_image_pixels=config.media.max_image_pixels,
            admin_store=self.admin_store,
            # self.federation is set above; its fetcher reaches self.media only when called.
            remote=self.federation.media if self.federation is not None else None,
        )
        self._wire_operator()

    def _wire_rooms(self, config: Config) -> None:
        self.state_store = StateStore(self.db)
        self.events = EventStore(self.db, self.state_store, config.database.event_cache_size)
        self.room_store = RoomStore(self.db)
        self.alias_store = AliasStore(self.db)
        self.account_data = StreamedAccountDataStore(self.db)
        self.reports = ReportStore(self.db)
        self.room_events = RoomEvents(config.server_name, self._require_signing_key, self.events)
        self.directory = Directory(
            config.server_name, self.alias_store, self.room_store, self.room_events, config.rooms.admins_may_publish
        )
        self.membership = Membership(config.server_name, self.room_events, self.room_store, self.accounts, self.directory)
        self.account_service.leave_all_rooms = self.membership.leave_everything
        self.room_creator = RoomCreator(config.server_name, self.room_events, self.membership, config.default_room_version)
        self.received_events = ReceivedEvents(self.room_events)
        self.room_reader = RoomReader(self.room_events, self.events, self.state_store, self.room_store, self.account_data)
        self.public_rooms = PublicRooms(config.server_name, self.room_store, self.room_events, self.events)

    def _wire_operator(self) -> None:
        from homeserver.admin.service import AdminService
        from homeserver.notices import ServerNotices

        self.user_directory = UserDirectoryStore(self.db)
        self.admin = AdminService(self)
        self.notices = ServerNotices(self)

    def is_local_user(self, user_id: str) -> bool:
        return user_id.startswith("@") and ":" in user_id and user_id.split(":", 1)[1] == self.server_name

    def _require_signing_key(self) -> SigningKey:
        assert self.signing_key is not None, "HomeServer.start() loads the signing key"
        return self.signing_key

    async def start(self) -> None:
        """Create what is missing on disk, and bring the schema up to date."""
        self.config.data_path.mkdir(parents=True, exist_ok=True)
        self.config.media_path.mkdir(parents=True, exist_ok=True)
        self.media.prepare()
        key_file = self.config.signing_key_file
        if not key_file.exists():
            logger.info("Generating a new signing key at %s", key_file)
            generate_signing_key_file(key_file)
        self.signing_key = load_signing_key(key_file)
        version = await migrate(self.db)
        logger.info("Database ready (%s, schema version %d)", self.db.dialect, version)
        await self.events.load_positions()
        await start_sync(self)
        await start_push_delivery(self)

    async def _delete_notifications(self, user_id: str) -> None:
        await self.push_actions.store.delete_user(user_id, self.events.positions.last)

    def begin_shutdown(self) -> None:
        """Let waiting long-polls answer now, so the listeners can close."""
        self.notifier.wake_all()

    async def stop(self) -> None:
        await stop_push_delivery(self)
        await stop_sync(self)
        if self.federation is not None:
            await self.federation.close()
        await self.db.close()
