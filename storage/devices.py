"""Devices and the access tokens that belong to them.

Tokens are stored only as their SHA-256: they are long random values, so a fast hash is
enough to make a leaked database useless for logging in.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec
from sqlalchemy import delete, insert, select, update

from storage.database import Connection, Database
from storage.schema import access_tokens, devices, users

_TOKEN_CACHE_SECONDS = 30.0
_TOKEN_CACHE_SIZE = 100_000


class NewDevice(msgspec.Struct, frozen=True):
    device_id: str
    display_name: str | None
    token_hash: str | None
    ip: str | None = None


class Device(msgspec.Struct, frozen=True):
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


class TokenOwner(msgspec.Struct, frozen=True):
    user_id: str
    device_id: str
    is_admin: bool


async def insert_device(conn: Connection, user_id: str, device: NewDevice, now_ms: int) -> None:
    """Create the device if it is new, and give it `device.token_hash` as its only token."""
    existing = (
        await conn.execute(
            select(devices.c.device_id).where(
                devices.c.user_id == user_id, devices.c.device_id == device.device_id
            )
        )
    ).first()
    if existing is None:
        await conn.execute(
            insert(devices).values(
                user_id=user_id,
                device_id=device.device_id,
                display_name=device.display_name,
                created_ts=now_ms,
                last_seen_ts=now_ms,
                last_seen_ip=device.ip,
            )
        )
    else:
        # Logging in again as an existing device replaces that device's session.
        await conn.execute(
            delete(access_tokens).where(
                access_tokens.c.user_id == user_id, access_tokens.c.device_id == device.device_id
            )
        )
        if device.display_name is not None:
            await conn.execute(
                update(devices)
                .where(devices.c.user_id == user_id, devices.c.device_id == device.device_id)
                .values(display_name=device.display_name)
            )
    if device.token_hash is not None:
        await conn.execute(
            insert(access_tokens).values(
                token_hash=device.token_hash,
                user_id=user_id,
                device_id=device.device_id,
                created_ts=now_ms,
            )
        )


def _device(row: object) -> Device:
    m = row._mapping  # type: ignore[attr-defined]
    return Device(
        user_id=m["user_id"],
        device_id=m["device_id"],
        display_name=m["display_name"],
        last_seen_ts=m["last_seen_ts"],
        last_seen_ip=m["last_seen_ip"],
    )


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # token hash -> (owner, expiry on the monotonic clock). Every request looks its
        # token up, so a burst of /sync long-polls would otherwise queue on the
        # database pool. This process drops a user's entries whenever it deletes one
        # of their tokens or changes the account (forget_user); the expiry bounds how
        # long another process's change (PostgreSQL deployments) can go unseen.
        self._owners: dict[str, tuple[TokenOwner, float]] = {}
        # Bumped by every forget, so a lookup that raced with one is not cached.
        self._generation = 0

    def forget_user(self, user_id: str) -> None:
        self._generation += 1
        for token_hash in [h for h, (owner, _) in self._owners.items() if owner.user_id == user_id]:
            del self._owners[token_hash]

    async def add_device(self, user_id: str, device: NewDevice, now_ms: int) -> None:
        async with self.db.write() as conn:
            await insert_device(conn, user_id, device, now_ms)
        self.forget_user(user_id)

    async def get_token_owner(self, token_hash: str) -> TokenOwner | None:
        cached = self._owners.get(token_hash)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        generation = self._generation
        owner = await self._load_token_owner(token_hash)
        if owner is not None and generation == self._generation:
            if len(self._owners) >= _TOKEN_CACHE_SIZE:
                self._owners.clear()
            self._owners[token_hash] = (owner, time.monotonic() + _TOKEN_CACHE_SECONDS)
        return owner

    async def _load_token_owner(self, token_hash: str) -> TokenOwner | None:
        query = (
            select(access_tokens.c.user_id, access_tokens.c.device_id, users.c.is_admin)
            .join(users, users.c.user_id == access_tokens.c.user_id)
            .where(access_tokens.c.token_hash == token_hash, users.c.deactivated.is_(False))
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return TokenOwner(row.user_id, row.device_id, bool(row.is_admin)) if row else None

    async def list_devices(self, user_id: str) -> list[Device]:
        query = select(devices).where(devices.c.user_id == user_id).order_by(devices.c.device_id)
        async with self.db.read() as conn:
            return [_device(row) for row in await conn.execute(query)]

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        query = select(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return _device(row) if row else None

    async def set_display_name(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(devices)
                .where(devices.c.user_id == user_id, devices.c.device_id == device_id)
                .values(display_name=display_name)
            )
        return result.rowcount > 0

    async def record_seen(self, user_id: str, device_id: str, now_ms: int, ip: str | None) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(devices)
                .where(devices.c.user_id == user_id, devices.c.device_id == device_id)
                .values(last_seen_ts=now_ms, last_seen_ip=ip)
            )

    async def delete_devices(self, user_id: str, device_ids: Iterable[str]) -> None:
        """Delete devices and, with them, their access tokens."""
        ids = list(device_ids)
        if not ids:
            return
        async with self.db.write() as conn:
            await conn.execute(
                delete(access_tokens).where(
                    access_tokens.c.user_id == user_id, access_tokens.c.device_id.in_(ids)
                )
            )
            await conn.execute(
                delete(devices).where(devices.c.user_id == user_id, devices.c.device_id.in_(ids))
            )
        self.forget_user(user_id)

    async def delete_other_devices(self, user_id: str, keep_device_id: str | None) -> None:
        """Log out everywhere (keeping one device, e.g. after a password change)."""
        async with self.db.write() as conn:
            token_filter = access_tokens.c.user_id == user_id
            device_filter = devices.c.user_id == user_id
            if keep_device_id is not None:
                token_filter = token_filter & (access_tokens.c.device_id != keep_device_id)
                device_filter = device_filter & (devices.c.device_id != keep_device_id)
            await conn.execute(delete(access_tokens).where(token_filter))
            await conn.execute(delete(devices).where(device_filter))
        self.forget_user(user_id)
