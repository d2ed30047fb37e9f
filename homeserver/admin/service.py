"""What a server admin can do, shared by the admin API and `homeserver admin ...`.

Results are shaped like Synapse's admin API, so its tools work unchanged.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import msgspec

from homeserver.errors import MatrixError, not_found
from homeserver.identifiers import split_user_id
from homeserver.rooms.reading import Reader
from storage.accounts import User
from storage.admin import RoomSummary
from storage.registration_tokens import RegistrationToken

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

logger = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

ROOM_ORDERS = {
    "name", "alphabetical", "size", "joined_members", "joined_local_members", "canonical_alias", "version",
    "creator", "encryption", "public", "join_rules", "guest_access", "history_visibility", "state_events",
}


def now_ms() -> int:
    return int(time.time() * 1000)


class DeleteStatus(msgspec.Struct):
    delete_id: str
    room_id: str
    status: str = "active"
    error: str | None = None
    kicked_users: list[str] = msgspec.field(default_factory=list)
    failed_to_kick_users: list[str] = msgspec.field(default_factory=list)
    local_aliases: list[str] = msgspec.field(default_factory=list)

    def shutdown_room(self) -> dict[str, Any]:
        return {
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": None,
        }

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "delete_id": self.delete_id,
            "room_id": self.room_id,
            "status": self.status,
            "shutdown_room": self.shutdown_room(),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def token_json(token: RegistrationToken) -> dict[str, Any]:
    return {
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    }


class AdminService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.admin_store
        self.server_name = hs.server_name
        # Room deletions of this process, for the v2 delete_status endpoints.
        self.deletions: dict[str, DeleteStatus] = {}

    # --- users ---------------------------------------------------------------------

    def local_user_id(self, user_id: str) -> str:
        parts = split_user_id(user_id)
        if parts is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {user_id!r}")
        if parts[1] != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Only local users can be managed here")
        return user_id

    async def existing_user(self, user_id: str) -> User:
        user = await self.hs.accounts.get_user(self.local_user_id(user_id))
        if user is None:
            raise not_found("User not found")
        return user

    def user_json(self, user: User, last_seen: int | None = None) -> dict[str, Any]:
        return {
            "name": user.user_id,
            "displayname": user.displayname,
            "avatar_url": user.avatar_url,
            "threepids": [],
            "external_ids": [],
            "is_guest": False,
            "admin": user.is_admin,
            "deactivated": user.deactivated,
            "erased": bool(user.deactivated and user.displayname is None and user.avatar_url is None),
            "shadow_banned": False,
            "locked": False,
            "suspended": False,
            "user_type": None,
            "appservice_id": None,
            "creation_ts": user.created_ts,
            "last_seen_ts": last_seen,
        }

    async def list_users(
        self,
        *,
        offset: int,
        limit: int,
        name: str | None = None,
        user_id: str | None = None,
        deactivated: bool = False,
        admins: bool | None = None,
    ) -> dict[str, Any]:
        if offset < 0 or limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "from and limit must not be negative")
        found, total = await self.store.list_users(
            offset=offset, limit=limit, name=name, user_id=user_id, deactivated=deactivated, admins=admins
        )
        body: dict[str, Any] = {"users": [self.user_json(u) for u in found], "total": total}
        if offset + len(found) < total:
            body["next_token"] = str(offset + len(found))
        return body

    async def user_info(self, user_id: str) -> dict[str, Any]:
        user = await self.existing_user(user_id)
        return self.user_json(user, await self.store.last_seen(user.user_id))

    async def put_user(self, user_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or modify a user (PUT /_synapse/admin/v2/users/{userId}); returns
        (the user, whether it was created)."""
        self.local_user_id(user_id)
        checked = _checked_user_body(body)
        user = await self.hs.accounts.get_user(user_id)
        created = user is None
        if user is None:
            localpart = user_id[1:].split(":", 1)[0]
            await self.hs.account_service.register(
                localpart, checked.get("password"), inhibit_login=True, is_admin=bool(checked.get("admin", False))
            )
            if "displayname" not in checked:
                checked["displayname"] = localpart
        else:
            if "password" in checked and checked["password"] is not None:
                await self.hs.account_service.change_password(
                    user_id,
                    checked["password"],
                    logout_devices=checked.get("logout_devices", True),
                    keep_device_id=None,
                )
            if "admin" in checked:
                await self.hs.accounts.set_admin(user_id, checked["admin"])
        profile_changed = False
        for field_name in ("displayname", "avatar_url"):
            if field_name in checked:
                await self.hs.accounts.set_profile_field(user_id, field_name, checked[field_name] or None)
                profile_changed = True
        if checked.get("deactivated") is True:
            await self.deactivate(user_id, erase=False)
        elif checked.get("deactivated") is False and user is not None and user.deactivated:
            await self.store.set_deactivated(user_id, False)
        elif profile_changed and not created:
            await self.hs.membership.profile_changed(user_id)
        return await self.user_info(user_id), created

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self.existing_user(user_id)
        await self.hs.accounts.set_admin(user_id, admin)

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        """Log the user out everywhere, leave every room and reject every invite, and
        lock the account; with erase, drop the profile too."""
        await self.existing_user(user_id)
        await self.hs.account_service.deactivate(user_id, erase=erase)

    async def reset_password(self, user_id: str, new_password: str, *, logout_devices: bool) -> None:
        user = await self.existing_user(user_id)
        if user.deactivated:
            raise MatrixError(400, "M_UNKNOWN", "The user is deactivated")
        await self.hs.account_service.change_password(
            user_id, new_password, logout_devices=logout_devices, keep_device_id=None
        )

    async def whois(self, user_id: str) -> dict[str, Any]:
        await self.existing_user(user_id)
        devices: dict[str, Any] = {}
        for device in await self.hs.devices.list_devices(user_id):
            connection: dict[str, Any] = {}
            if device.last_seen_ip is not None:
                connection["ip"] = device.last_seen_ip
            if device.last_seen_ts is not None:
                connection["last_seen"] = device.last_seen_ts
            devices[device.device_id] = {"sessions": [{"connections": [connection] if connection else []}]}
        return {"user_id": user_id, "devices": devices}

    # --- rooms ---------------------------------------------------------------------

    def room_json(self, room: RoomSummary, *, details: bool = False) -> dict[str, Any]:
        state = room.state
        encryption = state.get("m.room.encryption", {}).get("algorithm")
        federate = state.get("m.room.create", {}).get("m.federate", True)
        out: dict[str, Any] = {
            "room_id": room.room_id,
            "name": _str(state.get("m.room.name", {}).get("name")),
            "canonical_alias": _str(state.get("m.room.canonical_alias", {}).get("alias")),
            "joined_members": room.joined_members,
            "joined_local_members": room.joined_members,
            "version": room.room_version,
            "creator": room.creator,
            "encryption": _str(encryption),
            "federatable": federate is not False,
            "public": room.is_public,
            "join_rules": _str(state.get("m.room.join_rules", {}).get("join_rule")),
            "guest_access": _str(state.get("m.room.guest_access", {}).get("guest_access")),
            "history_visibility": _str(state.get("m.room.history_visibility", {}).get("history_visibility")),
            "state_events": room.state_events,
            "room_type": room.room_type,
        }
        if details:
            out["topic"] = _str(state.get("m.room.topic", {}).get("topic"))
            out["avatar"] = _str(state.get("m.room.avatar", {}).get("url"))
            tombstone = state.get("m.room.tombstone")
            out["tombstoned"] = tombstone is not None
            out["replacement_room"] = _str(tombstone.get("replacement_room")) if tombstone else None
        return out

    async def list_rooms(
        self,
        *,
        offset: int,
        limit: int,
        order_by: str = "name",
        backwards: bool = False,
        search_term: str | None = None,
        public: bool | None = None,
        empty: bool | None = None,
    ) -> dict[str, Any]:
        if offset < 0 or limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "from and limit must not be negative")
        if order_by not in ROOM_ORDERS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown order_by {order_by!r}")
        rooms = [self.room_json(r) for r in await self.store.room_summaries()]
        if search_term:
            needle = search_term.lower()
            rooms = [
                r
                for r in rooms
                if needle in (r["name"] or "").lower()
                or needle in (r["canonical_alias"] or "").lower()
                or search_term in r["room_id"]
            ]
        if public is not None:
            rooms = [r for r in rooms if r["public"] is public]
        if empty is not None:
            rooms = [r for r in rooms if (r["joined_members"] == 0) is empty]
        key = {"alphabetical": "name", "size": "joined_members"}.get(order_by, order_by)
        largest_first = key in ("joined_members", "joined_local_members", "version", "state_events", "public")
        rooms.sort(key=lambda r: r["room_id"])
        rooms.sort(key=lambda r: _sort_key(r[key]), reverse=largest_first != backwards)
        total = len(rooms)
        page = rooms[offset : offset + limit]
        body: dict[str, Any] = {"rooms": page, "offset": offset, "total_rooms": total}
        if offset + len(page) < total:
            body["next_batch"] = offset + len(page)
        if offset > 0:
            body["prev_batch"] = max(0, offset - limit)
        return body

    async def _summary(self, room_id: str) -> RoomSummary:
        if not room_id.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
        found = await self.store.room_summaries([room_id])
        if not found:
            raise not_found("Room not found")
        return found[0]

    async def room_details(self, room_id: str) -> dict[str, Any]:
        room = self.room_json(await self._summary(room_id), details=True)
        room["forgotten"] = await self.store.all_forgotten(room_id)
        room["joined_local_devices"] = 0
        return room

    async def room_members(self, room_id: str) -> dict[str, Any]:
        await self._summary(room_id)
        members = [m.user_id for m in await self.hs.room_store.members(room_id, ("join",))]
        return {"members": members, "total": len(members)}

    async def room_state(self, admin: str, room_id: str, event_type: str | None = None) -> dict[str, Any]:
        await self._summary(room_id)
        state_ids = (await self.hs.room_events.head(room_id)).state_ids
        wanted = [eid for (kind, _), eid in state_ids.items() if event_type is None or kind == event_type]
        found = await self.hs.events.get_events(wanted)
        events = [found[i] for i in wanted if i in found]
        return {"state": await self.hs.room_reader.serialize(Reader(admin, None), events)}

    async def delete_room(self, admin: str, room_id: str, *, block: bool, purge: bool) -> DeleteStatus:
        """Shut a room down: every local member leaves, its aliases and directory
        listing go; with block, nobody may join it again; with purge, every trace of it
        leaves the database."""
        await self._summary(room_id)
        status = DeleteStatus(delete_id=secrets.token_urlsafe(12), room_id=room_id)
        self.deletions[status.delete_id] = status
        try:
            if block:
                await self.store.block_room(room_id, admin, now_ms())
            for member in await self.hs.room_store.members(room_id, ("join", "invite", "knock")):
                if split_user_id(member.user_id) is None or not member.user_id.endswith(":" + self.server_name):
                    continue
                try:
                    await self.hs.membership.leave(member.user_id, room_id)
                    status.kicked_users.append(member.user_id)
                except MatrixError as exc:
                    logger.warning("Deleting %s: %s could not leave: %s", room_id, member.user_id, exc)
                    status.failed_to_kick_users.append(member.user_id)
            status.local_aliases = await self.hs.alias_store.aliases_of(room_id)
            for alias in status.local_aliases:
                await self.hs.alias_store.delete(alias)
            await self.hs.room_store.set_public(room_id, False)
            if purge:
                await self.purge_room(room_id)
            status.status = "complete"
        except Exception as exc:
            status.status = "failed"
            status.error = str(exc)
            raise
        return status

    async def purge_room(self, room_id: str) -> None:
        room_events = self.hs.room_events
        async with room_events.lock(room_id):
            await self.store.purge_room(room_id)
            # The in-memory views of the room go with it.
            forget_head = getattr(room_events, "forget_head", None)
            if forget_head is not None:
                forget_head(room_id)
            else:
                room_events._heads.pop(room_id, None)
            cache = self.hs.events._cache
            for event_id in [eid for eid, event in cache.items() if event.room_id == room_id]:
                cache.pop(event_id, None)

    async def block_status(self, room_id: str) -> dict[str, Any]:
        by = await self.store.room_blocked_by(room_id)
        return {"block": True, "user_id": by} if by is not None else {"block": False}

    # --- registration tokens -------------------------------------------------------

    async def list_tokens(self, valid: bool | None) -> dict[str, Any]:
        now = now_ms()
        tokens = await self.hs.registration_tokens.list()
        if valid is not None:
            tokens = [t for t in tokens if t.usable(now) is valid]
        return {"registration_tokens": [token_json(t) for t in tokens]}

    async def get_token(self, token: str) -> dict[str, Any]:
        found = await self.hs.registration_tokens.get(token)
        if found is None:
            raise not_found(f"No such registration token: {token}")
        return token_json(found)

    async def new_token(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("token")
        uses_allowed = _optional_count(body, "uses_allowed")
        expiry_time = _optional_expiry(body)
        if token is None:
            length = body.get("length", 16)
            if not _is_int(length) or not 1 <= length <= 64:
                raise MatrixError(400, "M_INVALID_PARAM", "length must be an integer between 1 and 64")
            for _ in range(10):
                token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))
                if await self.hs.registration_tokens.create(token, uses_allowed, expiry_time):
                    return await self.get_token(token)
            raise MatrixError(500, "M_UNKNOWN", "Could not generate an unused token")
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            raise MatrixError(400, "M_INVALID_PARAM", "token must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
        if not await self.hs.registration_tokens.create(token, uses_allowed, expiry_time):
            raise MatrixError(400, "M_INVALID_PARAM", f"Token already exists: {token}")
        return await self.get_token(token)

    async def update_token(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, int | None] = {}
        if "uses_allowed" in body:
            values["uses_allowed"] = _optional_count(body, "uses_allowed")
        if "expiry_time" in body:
            values["expiry_time"] = _optional_expiry(body)
        updated = await self.hs.registration_tokens.update(token, values)
        if updated is None:
            raise not_found(f"No such registration token: {token}")
        return token_json(updated)

    async def delete_token(self, token: str) -> None:
        if not await self.hs.registration_tokens.delete(token):
            raise not_found(f"No such registration token: {token}")

    # --- media ---------------------------------------------------------------------

    async def quarantine_media(self, admin: str, server_name: str, media_id: str) -> None:
        await self.store.quarantine({(server_name, media_id)}, admin, now_ms())

    async def unquarantine_media(self, server_name: str, media_id: str) -> None:
        await self.store.unquarantine(server_name, media_id)

    async def quarantine_room_media(self, admin: str, room_id: str) -> int:
        if not room_id.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
        media = await self.store.media_in_room(room_id)
        return await self.store.quarantine(media, admin, now_ms())

    async def quarantine_user_media(self, admin: str, user_id: str) -> int:
        await self.existing_user(user_id)
        media = {(self.server_name, m) for m in await self.store.media_of_user(user_id)}
        return await self.store.quarantine(media, admin, now_ms())

    # --- event reports -------------------------------------------------------------

    async def _room_names(self, room_ids: set[str]) -> dict[str, RoomSummary]:
        return {r.room_id: r for r in await self.store.room_summaries(sorted(room_ids))}

    async def event_reports(
        self,
        *,
        offset: int,
        limit: int,
        backwards: bool = True,
        user_id: str | None = None,
        room_id: str | None = None,
        event_sender: str | None = None,
    ) -> dict[str, Any]:
        if offset < 0 or limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "from and limit must not be negative")
        page, total = await self.store.event_reports(
            offset=offset, limit=limit, backwards=backwards, user_id=user_id, room_id=room_id, event_sender=event_sender
        )
        rooms = await self._room_names({report.room_id for report, _ in page})
        reports = []
        for report, sender in page:
            room = rooms.get(report.room_id)
            state = room.state if room else {}
            reports.append(
                {
                    "id": report.id,
                    "received_ts": report.received_ts,
                    "room_id": report.room_id,
                    "name": _str(state.get("m.room.name", {}).get("name")),
                    "canonical_alias": _str(state.get("m.room.canonical_alias", {}).get("alias")),
                    "event_id": report.event_id,
                    "user_id": report.user_id,
                    "reason": report.reason,
                    "score": report.score,
                    "sender": sender,
                }
            )
        body: dict[str, Any] = {"event_reports": reports, "total": total}
        if offset + len(page) < total:
            body["next_token"] = offset + len(page)
        return body

    async def event_report(self, report_id: int) -> dict[str, Any]:
        report = await self.store.event_report(report_id)
        if report is None:
            raise not_found("Event report not found")
        event = await self.hs.events.get_event(report.event_id)
        rooms = await self._room_names({report.room_id})
        room = rooms.get(report.room_id)
        state = room.state if room else {}
        return {
            "id": report.id,
            "received_ts": report.received_ts,
            "room_id": report.room_id,
            "name": _str(state.get("m.room.name", {}).get("name")),
            "canonical_alias": _str(state.get("m.room.canonical_alias", {}).get("alias")),
            "event_id": report.event_id,
            "user_id": report.user_id,
            "reason": report.reason,
            "score": report.score,
            "sender": event.sender if event else None,
            "event_json": event.pdu if event else None,
        }


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts last in either direction's natural order; numbers and strings apart.
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int):
        return (1, value)
    if isinstance(value, str) and value.isdigit():
        return (1, int(value))
    return (2, str(value).lower())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_count(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a non-negative integer or null")
    return int(value)


def _optional_expiry(body: dict[str, Any]) -> int | None:
    value = body.get("expiry_time")
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "expiry_time must be a timestamp in milliseconds or null")
    if value < now_ms():
        raise MatrixError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")
    return int(value)


def _checked_user_body(body: dict[str, Any]) -> dict[str, Any]:
    """The recognised fields of a create/modify user body, type-checked."""
    checked: dict[str, Any] = {}
    for name in ("password", "displayname", "avatar_url"):
        if name in body:
            value = body[name]
            if value is not None and not isinstance(value, str):
                raise MatrixError(400, "M_BAD_JSON", f"{name} must be a string")
            checked[name] = value
    if isinstance(checked.get("displayname"), str) and len(checked["displayname"]) > 256:
        raise MatrixError(400, "M_INVALID_PARAM", "displayname is longer than 256 characters")
    avatar = checked.get("avatar_url")
    if avatar and not avatar.startswith("mxc://"):
        raise MatrixError(400, "M_INVALID_PARAM", "avatar_url must be an mxc:// URI")
    for name in ("admin", "deactivated", "logout_devices"):
        if name in body:
            if not isinstance(body[name], bool):
                raise MatrixError(400, "M_BAD_JSON", f"{name} must be true or false")
            checked[name] = body[name]
    return checked
