"""Other servers' users' device lists, cached while we share a room with them, and
the per-user view of our own device-list stream that federation needs."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from sqlalchemy import delete, func, select, update

from storage.database import Database, upsert
from storage.schema import (
    local_device_list_updates,
    remote_device_lists,
    remote_devices,
    room_memberships,
)


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _load(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class RemoteDevice(msgspec.Struct, frozen=True):
    device_id: str
    display_name: str | None
    keys: dict[str, Any] | None


class RemoteDeviceList(msgspec.Struct):
    user_id: str
    stream_id: int
    stale: bool
    master_key: dict[str, Any] | None
    self_signing_key: dict[str, Any] | None
    devices: dict[str, RemoteDevice] = msgspec.field(default_factory=dict)


class RemoteDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the cache of remote device lists ---------------------------------------------

    async def get(self, user_id: str) -> RemoteDeviceList | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(remote_device_lists).where(remote_device_lists.c.user_id == user_id))).first()
            if row is None:
                return None
            found = RemoteDeviceList(
                user_id, int(row.stream_id), bool(row.stale), _load(row.master_key), _load(row.self_signing_key)
            )
            for device in await conn.execute(select(remote_devices).where(remote_devices.c.user_id == user_id)):
                found.devices[device.device_id] = RemoteDevice(device.device_id, device.display_name, _load(device.key_json))
        return found

    async def replace(self, device_list: RemoteDeviceList) -> None:
        """Store a full snapshot (GET /user/devices), replacing what was cached."""
        user_id = device_list.user_id
        async with self.db.write() as conn:
            await conn.execute(delete(remote_devices).where(remote_devices.c.user_id == user_id))
            await upsert(
                conn,
                remote_device_lists,
                {
                    "user_id": user_id,
                    "stream_id": device_list.stream_id,
                    "stale": False,
                    "master_key": _dump(device_list.master_key),
                    "self_signing_key": _dump(device_list.self_signing_key),
                    "updated_ts": int(time.time() * 1000),
                },
                ["user_id"],
            )
            rows = [
                {"user_id": user_id, "device_id": d.device_id, "display_name": d.display_name, "key_json": _dump(d.keys)}
                for d in device_list.devices.values()
            ]
            if rows:
                await conn.execute(remote_devices.insert(), rows)

    async def apply_update(
        self, user_id: str, device_id: str, stream_id: int, display_name: str | None, keys: Any, deleted: bool
    ) -> None:
        """One m.device_list_update that follows on from what is cached."""
        async with self.db.write() as conn:
            await conn.execute(
                update(remote_device_lists)
                .where(remote_device_lists.c.user_id == user_id)
                .values(stream_id=stream_id, updated_ts=int(time.time() * 1000))
            )
            if deleted:
                await conn.execute(
                    delete(remote_devices).where(remote_devices.c.user_id == user_id, remote_devices.c.device_id == device_id)
                )
            else:
                await upsert(
                    conn,
                    remote_devices,
                    {"user_id": user_id, "device_id": device_id, "display_name": display_name, "key_json": _dump(keys)},
                    ["user_id", "device_id"],
                )

    async def set_cross_signing(self, user_id: str, master_key: Any, self_signing_key: Any) -> None:
        values: dict[str, Any] = {}
        if master_key is not None:
            values["master_key"] = _dump(master_key)
        if self_signing_key is not None:
            values["self_signing_key"] = _dump(self_signing_key)
        if not values:
            return
        async with self.db.write() as conn:
            await conn.execute(update(remote_device_lists).where(remote_device_lists.c.user_id == user_id).values(**values))

    async def mark_stale(self, user_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(remote_device_lists).where(remote_device_lists.c.user_id == user_id).values(stale=True)
            )

    async def forget(self, user_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(remote_devices).where(remote_devices.c.user_id == user_id))
            await conn.execute(delete(remote_device_lists).where(remote_device_lists.c.user_id == user_id))

    async def cached_among(self, user_ids: list[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(user_ids), 500):
            query = select(remote_device_lists.c.user_id).where(
                remote_device_lists.c.user_id.in_(user_ids[start : start + 500])
            )
            async with self.db.read() as conn:
                found.extend(row[0] for row in await conn.execute(query))
        return found

    # --- rooms shared with local users --------------------------------------------------

    async def shares_room_with_local_user(self, user_id: str, server_name: str) -> bool:
        """Whether `user_id` is joined to a room a user of `server_name` is joined to:
        only then do their server's device-list updates reach us."""
        theirs = room_memberships.alias("theirs")
        ours = room_memberships.alias("ours")
        query = (
            select(ours.c.user_id)
            .join(theirs, theirs.c.room_id == ours.c.room_id)
            .where(
                theirs.c.user_id == user_id,
                theirs.c.membership == "join",
                ours.c.membership == "join",
                ours.c.user_id.endswith(":" + server_name, autoescape=True),
            )
            .limit(1)
        )
        async with self.db.read() as conn:
            return (await conn.execute(query)).first() is not None

    # --- our own users' device-list updates, as federation numbers them ---------------

    async def record_local_update(self, user_id: str, stream_id: int) -> int | None:
        """Record a change to a local user's devices at `stream_id`; returns the
        previous such position (the update's prev_id), if any."""
        async with self.db.write() as conn:
            previous = (
                await conn.execute(
                    select(func.max(local_device_list_updates.c.stream_id)).where(
                        local_device_list_updates.c.user_id == user_id,
                        local_device_list_updates.c.stream_id < stream_id,
                    )
                )
            ).scalar()
            await upsert(conn, local_device_list_updates, {"user_id": user_id, "stream_id": stream_id}, ["user_id", "stream_id"])
        return int(previous) if previous is not None else None

    async def last_local_update(self, user_id: str) -> int | None:
        query = select(func.max(local_device_list_updates.c.stream_id)).where(
            local_device_list_updates.c.user_id == user_id
        )
        async with self.db.read() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value) if value is not None else None
