"""The running server: config, database, stores and services, wired once at start-up.

Handlers reach everything through `request.app.state.hs`.
"""

from __future__ import annotations

import logging
import time

from signedjson.types import SigningKey

from homeserver.accounts import Accounts
from homeserver.config import Config
from homeserver.ratelimit import RateLimiter
from homeserver.signing_key import generate_signing_key_file, load_signing_key
from homeserver.uia import UserInteractiveAuth
from storage.accounts import AccountStore
from storage.database import Database
from storage.devices import DeviceStore
from storage.migrations import migrate
from storage.registration_tokens import RegistrationTokenStore
from storage.uia import UiaStore

logger = logging.getLogger(__name__)


class HomeServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_name = config.server_name
        self.started_ms = int(time.time() * 1000)
        self.db = Database.open(config.database_url)
        self.accounts = AccountStore(self.db)
        self.devices = DeviceStore(self.db)
        self.registration_tokens = RegistrationTokenStore(self.db)
        self.uia = UserInteractiveAuth(UiaStore(self.db))
        self.account_service = Accounts(config.server_name, self.accounts, self.devices)
        self.ratelimiter = RateLimiter(config.rate_limits.enabled)
        self.last_seen_written: dict[tuple[str, str], int] = {}
        self.signing_key: SigningKey | None = None

    async def start(self) -> None:
        """Create what is missing on disk, and bring the schema up to date."""
        self.config.data_path.mkdir(parents=True, exist_ok=True)
        self.config.media_path.mkdir(parents=True, exist_ok=True)
        key_file = self.config.signing_key_file
        if not key_file.exists():
            logger.info("Generating a new signing key at %s", key_file)
            generate_signing_key_file(key_file)
        self.signing_key = load_signing_key(key_file)
        version = await migrate(self.db)
        logger.info("Database ready (%s, schema version %d)", self.db.dialect, version)

    async def stop(self) -> None:
        await self.db.close()
