"""Accounts: registration, login, sessions, passwords, deactivation.

The rules live here; `api/` only parses requests and `storage/` only runs SQL.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import msgspec

from homeserver.auth import hash_token, new_access_token
from homeserver.errors import MatrixError, forbidden
from homeserver.identifiers import (
    LOCALPART_RE,
    MAX_USER_ID_LENGTH,
    new_device_id,
    user_id_for,
)
from homeserver.passwords import check_password, hash_password
from storage.accounts import AccountStore
from storage.devices import DeviceStore, NewDevice

MAX_PASSWORD_LENGTH = 512


class Session(msgspec.Struct, frozen=True):
    user_id: str
    device_id: str | None
    access_token: str | None


def now_ms() -> int:
    return int(time.time() * 1000)


class Accounts:
    def __init__(self, server_name: str, accounts: AccountStore, devices: DeviceStore) -> None:
        self.server_name = server_name
        self.accounts = accounts
        self.devices = devices
        # Set by the room side: take a user out of every room (and invite, and knock)
        # before the account is locked, so its rooms see it go.
        self.leave_all_rooms: Callable[[str], Awaitable[None]] | None = None
        # Set by the push side: delete the user's notifications (not one query: see
        # PushActionStore.delete_user).
        self.delete_notifications: Callable[[str], Awaitable[None]] | None = None
        # Caches of the private data deactivation deletes, dropped after it.
        self.deactivated_listeners: list[Callable[[str], None]] = []

    def check_localpart(self, localpart: str) -> str:
        """The user ID for a wanted localpart, or M_INVALID_USERNAME."""
        if not localpart or not LOCALPART_RE.match(localpart):
            raise MatrixError(
                400,
                "M_INVALID_USERNAME",
                "User ID may only contain lowercase letters, digits and ._=-/+",
            )
        user_id = user_id_for(localpart, self.server_name)
        if len(user_id.encode()) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID is too long")
        return user_id

    async def is_available(self, localpart: str) -> bool:
        user_id = self.check_localpart(localpart)
        return await self.accounts.get_user(user_id) is None

    async def generate_localpart(self) -> str:
        while True:
            localpart = "u" + secrets.token_hex(6)
            if await self.is_available(localpart):
                return localpart

    async def register(
        self,
        localpart: str,
        password: str | None,
        *,
        device_id: str | None = None,
        device_display_name: str | None = None,
        inhibit_login: bool = False,
        is_admin: bool = False,
        ip: str | None = None,
    ) -> Session:
        user_id = self.check_localpart(localpart)
        if password is not None and len(password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_WEAK_PASSWORD", "Password is too long")
        password_hash = await hash_password(password) if password else None
        token = None if inhibit_login else new_access_token()
        device = None
        if not inhibit_login:
            device_id = device_id or new_device_id()
            device = NewDevice(device_id, device_display_name, hash_token(token) if token else None, ip)
        created = await self.accounts.create_user(
            user_id, password_hash, now_ms(), is_admin=is_admin, displayname=localpart, device=device
        )
        if not created:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        return Session(user_id, device.device_id if device else None, token)

    async def resolve_login_user(self, user: str) -> str:
        """A full user ID from what a client sent: a localpart or a full ID."""
        if user.startswith("@"):
            return user
        return user_id_for(user.lower(), self.server_name)

    async def verify_password(self, user_id: str, password: str) -> bool:
        user = await self.accounts.get_user(user_id)
        if user is None or user.deactivated:
            # Hash anyway so response timing does not reveal which accounts exist.
            await check_password(password, _DECOY_HASH)
            return False
        return await check_password(password, user.password_hash)

    async def login(
        self, user_id: str, password: str, device_id: str | None, display_name: str | None, ip: str | None
    ) -> Session:
        if not await self.verify_password(user_id, password):
            raise forbidden("Invalid username or password")
        return await self.new_session(user_id, device_id, display_name, ip)

    async def new_session(
        self, user_id: str, device_id: str | None, display_name: str | None, ip: str | None = None
    ) -> Session:
        device_id = device_id or new_device_id()
        token = new_access_token()
        await self.devices.add_device(user_id, NewDevice(device_id, display_name, hash_token(token), ip), now_ms())
        return Session(user_id, device_id, token)

    async def change_password(
        self, user_id: str, new_password: str, *, logout_devices: bool, keep_device_id: str | None
    ) -> None:
        """Set a new password; with logout_devices every session but `keep_device_id` ends."""
        if len(new_password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_WEAK_PASSWORD", "Password is too long")
        await self.accounts.set_password_hash(user_id, await hash_password(new_password))
        if logout_devices:
            await self.devices.delete_other_devices(user_id, keep_device_id)

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        """The user's own deactivation and an operator's alike: leave every room,
        delete every device, then lock the account and delete its private data."""
        if self.leave_all_rooms is not None:
            await self.leave_all_rooms(user_id)
        # Through the device store, so that the devices' keys, to-device messages and
        # pushers go with them. (Nobody shares a room with the user any more, so no
        # device-list update goes out: leaving told the others to stop tracking.)
        await self.devices.delete_other_devices(user_id, None)
        await self.accounts.deactivate(user_id, erase=erase)
        if self.delete_notifications is not None:
            await self.delete_notifications(user_id)
        for listener in self.deactivated_listeners:
            listener(user_id)


# An Argon2 hash of a random string, used to spend the same time on unknown users.
_DECOY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$bgViQfsisFaqn3IAAkDMQQ$HXVwat29v9B5NJ5Nv9uy69nUhO6Ugb7QxTgfp20ePNI"
