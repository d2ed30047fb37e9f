"""Users: accounts, password hashes, admin flag, profile fields."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.devices import NewDevice, insert_device
from storage.schema import (
    access_tokens,
    account_data,
    devices,
    e2e_cross_signing_keys,
    e2e_device_keys,
    e2e_fallback_keys,
    e2e_one_time_keys,
    event_push_summary,
    push_own_events,
    push_rule_defaults,
    push_rules,
    room_key_backup_keys,
    room_key_backup_versions,
    to_device_messages,
    to_device_txns,
    users,
)

# What a deactivated account keeps no more: its sessions and devices, and its private
# data (as Synapse purges it): account data, push rules, end-to-end keys and key
# backups, undelivered to-device messages, unread counts. Its events, receipts and
# media stay; filters too (their IDs are never reused).
_PRIVATE_TABLES = (
    access_tokens,
    devices,
    account_data,
    push_rules,
    push_rule_defaults,
    e2e_device_keys,
    e2e_one_time_keys,
    e2e_fallback_keys,
    e2e_cross_signing_keys,
    room_key_backup_keys,
    room_key_backup_versions,
    to_device_messages,
    to_device_txns,
    event_push_summary,
    push_own_events,
)


class User(msgspec.Struct, frozen=True):
    user_id: str
    password_hash: str | None
    is_admin: bool
    deactivated: bool
    created_ts: int
    displayname: str | None
    avatar_url: str | None


def _user(row: object) -> User:
    return User(**row._mapping)  # type: ignore[attr-defined]


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called with a user ID after a change that affects their sessions (admin
        # flag, deactivation), so caches of token owners can drop it.
        self.user_changed: list[Callable[[str], None]] = []

    def _changed(self, user_id: str) -> None:
        for listener in self.user_changed:
            listener(user_id)

    async def get_user(self, user_id: str) -> User | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.user_id == user_id))).first()
        return _user(row) if row else None

    async def count_users(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())

    async def create_user(
        self,
        user_id: str,
        password_hash: str | None,
        now_ms: int,
        *,
        is_admin: bool = False,
        displayname: str | None = None,
        device: NewDevice | None = None,
    ) -> bool:
        """Create the account (and its first device, in the same transaction).

        Returns False when the user ID is taken.
        """
        try:
            async with self.db.write() as conn:
                await conn.execute(
                    insert(users).values(
                        user_id=user_id,
                        password_hash=password_hash,
                        is_admin=is_admin,
                        deactivated=False,
                        created_ts=now_ms,
                        displayname=displayname,
                        avatar_url=None,
                    )
                )
                if device is not None:
                    await insert_device(conn, user_id, device, now_ms)
        except IntegrityError:
            return False
        return True

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(users).where(users.c.user_id == user_id).values(password_hash=password_hash)
            )

    async def set_admin(self, user_id: str, is_admin: bool) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(users).where(users.c.user_id == user_id).values(is_admin=is_admin))
        self._changed(user_id)

    async def set_profile_field(self, user_id: str, field: str, value: str | None) -> None:
        if field not in ("displayname", "avatar_url"):
            raise ValueError(field)
        async with self.db.write() as conn:
            await conn.execute(update(users).where(users.c.user_id == user_id).values({field: value}))

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        """Lock the account for good: no password, no devices, no tokens, none of its
        private data (`_PRIVATE_TABLES`)."""
        values: dict[str, object] = {"deactivated": True, "password_hash": None}
        if erase:
            values.update(displayname=None, avatar_url=None)
        async with self.db.write() as conn:
            for table in _PRIVATE_TABLES:
                await conn.execute(delete(table).where(table.c.user_id == user_id))
            await conn.execute(update(users).where(users.c.user_id == user_id).values(values))
        self._changed(user_id)
