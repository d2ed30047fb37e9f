"""EDUs of end-to-end encryption and presence, both ways (spec: Server-Server API,
"Device Management", "Send-to-device messaging", "Presence").

Out: a change to a local user's devices (new device keys, a deleted device, a new
display name, a new signature) is an m.device_list_update to every server sharing a
room with the user; new cross-signing keys an m.signing_key_update; presence changes
an m.presence. Our `stream_id` for a user is the position of the change in the
device-list stream, and `prev_id` the user's previous position there.

In: every EDU about a user is accepted only from that user's own server. A device-list
update that follows on from the cached list (its prev_id is the stream_id we hold) is
applied; any other marks the cache stale, so the next query refetches it. Either way
the user counts as changed, so local users sharing a room see them in
`device_lists.changed`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from federation.e2ee import RemoteKeys, _cross_signing_ok, _device_keys_ok
from homeserver.events import domain_of
from homeserver.identifiers import split_user_id
from storage.presence import PresenceRow

logger = logging.getLogger(__name__)

# A to-device EDU may address at most this many devices here.
MAX_TO_DEVICE_TARGETS = 10_000
PRESENCE_STATES = ("online", "unavailable", "offline")


def _from(origin: str, user_id: Any) -> bool:
    """`user_id` is a well-formed user of the server `origin`."""
    if not isinstance(user_id, str):
        return False
    parts = split_user_id(user_id)
    return parts is not None and parts[1] == origin


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class DeviceListEdus:
    def __init__(self, hs: Any, keys: RemoteKeys) -> None:
        self.hs = hs
        self.keys = keys

    def register(self, handlers: dict[str, Any]) -> None:
        handlers["m.device_list_update"] = self.on_device_list_update
        handlers["m.signing_key_update"] = self.on_signing_key_update
        handlers["m.direct_to_device"] = self.on_direct_to_device
        handlers["m.presence"] = self.on_presence

    async def servers_sharing_rooms(self, user_id: str) -> set[str]:
        users = await self.hs.sync_queries.users_sharing_rooms(user_id)
        servers = {parts[1] for parts in map(split_user_id, users) if parts is not None}
        servers.discard(self.hs.server_name)
        return servers

    async def on_event(self, event: Any) -> None:
        """RoomEvents listener: when someone leaves, the remote users we no longer share
        a room with stop being tracked (their server stops telling us of changes, so a
        cached list could silently go out of date before we share a room again)."""
        if event.type != "m.room.member" or event.outlier or not isinstance(event.state_key, str):
            return
        if event.content.get("membership") == "join":
            await self._presence_on_join(event.room_id, event.state_key)
            return
        user_id = event.state_key
        if self.hs.is_local_user(user_id):
            members = await self.hs.sync_queries.joined_members(event.room_id)
            candidates = [m for m in members if not self.hs.is_local_user(m)]
        else:
            candidates = [user_id]
        for remote_user in await self.keys.store.cached_among(candidates):
            if not await self.keys.tracked(remote_user):
                await self.keys.store.forget(remote_user)

    # --- out -------------------------------------------------------------------------

    async def local_devices_changed(
        self, user_id: str, device_ids: list[str], position: int, deleted: bool = False
    ) -> None:
        if not device_ids:
            return
        # Recorded even with nobody to tell: a server that fetches the list later
        # numbers its updates from here.
        previous = await self.keys.store.record_local_update(user_id, position)
        servers = await self.servers_sharing_rooms(user_id)
        if not servers:
            return
        keys: dict[str, Any] = {}
        names: dict[str, str | None] = {}
        if not deleted:
            found = await self.hs.e2ee.query("", {user_id: device_ids})
            keys = found["device_keys"].get(user_id, {})
            names = {d.device_id: d.display_name for d in await self.hs.devices.list_devices(user_id)}
        for device_id in device_ids:
            content: dict[str, Any] = {
                "user_id": user_id,
                "device_id": device_id,
                "stream_id": position,
                "prev_id": [previous] if previous is not None else [],
                "deleted": deleted,
            }
            if not deleted:
                if device_id not in names:
                    content["deleted"] = True  # gone again meanwhile
                else:
                    if names[device_id]:
                        content["device_display_name"] = names[device_id]
                    if device_id in keys:
                        content["keys"] = {k: v for k, v in keys[device_id].items() if k != "unsigned"}
            self.hs.federation.sender.send_edu(servers, "m.device_list_update", content)

    async def local_signing_keys_changed(self, user_id: str) -> None:
        servers = await self.servers_sharing_rooms(user_id)
        if not servers:
            return
        found = await self.hs.e2ee.query("", {user_id: []})
        content: dict[str, Any] = {"user_id": user_id}
        if user_id in found["master_keys"]:
            content["master_key"] = found["master_keys"][user_id]
        if user_id in found["self_signing_keys"]:
            content["self_signing_key"] = found["self_signing_keys"][user_id]
        self.hs.federation.sender.send_edu(servers, "m.signing_key_update", content)

    async def local_presence_changed(self, row: PresenceRow) -> None:
        servers = await self.servers_sharing_rooms(row.user_id)
        if not servers:
            return
        entry = {"user_id": row.user_id, **self.hs.presence.content(row)}
        entry.setdefault("currently_active", False)
        self.hs.federation.sender.send_edu(servers, "m.presence", {"push": [entry]})

    async def _presence_on_join(self, room_id: str, user_id: str) -> None:
        """A join can make servers share a room for the first time, and presence is
        sent only on changes: tell a server new to the room where our members are,
        and the room's other servers where our joining user is (as Synapse does)."""
        if not self.hs.presence.enabled:
            return
        members = await self.hs.sync_queries.joined_members(room_id)
        if self.hs.is_local_user(user_id):
            ours, servers = [user_id], {domain_of(m) for m in members if not self.hs.is_local_user(m)}
        else:
            server = domain_of(user_id)
            if sum(1 for m in members if domain_of(m) == server) > 1:
                return  # that server was in the room already
            ours, servers = [m for m in members if self.hs.is_local_user(m)], {server}
        entries = []
        for member in ours:
            content = await self.hs.presence.get(member)
            if content["presence"] != "offline":
                entries.append({"user_id": member, "currently_active": False, **content})
        if entries and servers:
            self.hs.federation.sender.send_edu(servers, "m.presence", {"push": entries})

    # --- in --------------------------------------------------------------------------

    async def _mark_changed(self, user_id: str) -> None:
        position = await self.hs.e2e_keys.mark_changed([user_id])
        await self.hs.e2ee.devices_changed(user_id, position)

    async def on_device_list_update(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        user_id, device_id = content.get("user_id"), content.get("device_id")
        stream_id = _int(content.get("stream_id"))
        if not _from(origin, user_id) or not isinstance(device_id, str) or stream_id is None:
            return
        if not await self.keys.tracked(user_id):
            return  # we share no room: nobody here needs their devices
        cached = await self.keys.store.get(user_id)
        if cached is not None:
            prev_ids = content.get("prev_id")
            prev = [p for p in prev_ids if _int(p) is not None] if isinstance(prev_ids, list) else []
            if stream_id <= cached.stream_id and not cached.stale:
                return  # already applied (a resent transaction)
            keys = content.get("keys")
            name = content.get("device_display_name")
            if not cached.stale and prev and all(p == cached.stream_id for p in prev):
                await self.keys.store.apply_update(
                    user_id,
                    device_id,
                    stream_id,
                    name if isinstance(name, str) else None,
                    keys if _device_keys_ok(user_id, device_id, keys) else None,
                    content.get("deleted") is True,
                )
            else:
                # A gap: we missed an update. The next query fetches the whole list.
                logger.info("Device list of %s: update %d does not follow %d; refetching", user_id, stream_id, cached.stream_id)
                await self.keys.store.mark_stale(user_id)
        await self._mark_changed(user_id)

    async def on_signing_key_update(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        user_id = content.get("user_id")
        if not _from(origin, user_id) or not await self.keys.tracked(user_id):
            return
        master, self_signing = content.get("master_key"), content.get("self_signing_key")
        master = master if _cross_signing_ok(user_id, master) else None
        self_signing = self_signing if _cross_signing_ok(user_id, self_signing) else None
        if master is None and self_signing is None:
            return
        await self.keys.store.set_cross_signing(user_id, master, self_signing)
        await self._mark_changed(user_id)

    async def on_direct_to_device(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if not _from(origin, sender) or not isinstance(event_type, str) or not event_type:
            return
        if not isinstance(message_id, str) or not message_id or not isinstance(messages, dict):
            return
        local: dict[str, dict[str, Any]] = {}
        targets = 0
        for user_id, by_device in messages.items():
            if not _from(self.hs.server_name, user_id) or not isinstance(by_device, dict):
                continue
            wanted = {d: c for d, c in by_device.items() if isinstance(d, str) and isinstance(c, dict)}
            targets += len(wanted)
            if wanted:
                local[user_id] = wanted
        if not local or targets > MAX_TO_DEVICE_TARGETS:
            return
        # Deduplicated by message ID: the remote sender has no device of ours, so the
        # pair (sender, "") cannot collide with a local client's transaction IDs.
        await self.hs.e2ee.deliver_to_device(sender, event_type, local, (sender, "", f"{origin}|{message_id}"))

    async def on_presence(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("push"), list):
            return
        now = int(time.time() * 1000)
        for entry in content["push"][:1000]:
            if not isinstance(entry, dict):
                continue
            user_id, state = entry.get("user_id"), entry.get("presence")
            ago = _int(entry.get("last_active_ago"))
            if not _from(origin, user_id) or state not in PRESENCE_STATES:
                continue
            if not await self.keys.tracked(user_id):
                continue
            status = entry.get("status_msg")
            await self.hs.presence.set_remote(
                user_id, state, status if isinstance(status, str) else None, now - max(0, ago or 0)
            )
