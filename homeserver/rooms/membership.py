"""Membership changes: join, invite, leave, kick, ban, unban, knock, forget, and
profile changes carried into every joined room.

The authorization rules decide what is allowed; this module adds the client-facing
rules around them (who may be kicked, what "unban" means) and the member event
content (display name, avatar, reason, is_direct).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.identifiers import split_user_id
from homeserver.rooms.directory import Directory
from homeserver.rooms.events import RoomEvents
from storage.accounts import AccountStore
from storage.events import StoredEvent
from storage.rooms import RoomStore

logger = logging.getLogger(__name__)


class Membership:
    def __init__(
        self,
        server_name: str,
        room_events: RoomEvents,
        rooms: RoomStore,
        accounts: AccountStore,
        directory: Directory,
    ) -> None:
        self.server_name = server_name
        self.room_events = room_events
        self.rooms = rooms
        self.accounts = accounts
        self.directory = directory
        # Set when federation is on: joins rooms this server is not in yet, and gets
        # invites to other servers' users countersigned by their server.
        self.remote_join: Callable[[str, str, list[str], dict[str, Any]], Awaitable[None]] | None = None
        self.remote_invite: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        # Also set with federation: leaving (rejecting an invite, rescinding a knock)
        # and knocking on rooms this server is not in, through a resident server.
        self.remote_leave: Callable[[str, str, list[str], str | None], Awaitable[None]] | None = None
        self.remote_knock: Callable[[str, str, list[str], dict[str, Any]], Awaitable[None]] | None = None
        # Set by the operator side: whether an admin has blocked the room.
        self.room_blocked: Callable[[str], Awaitable[bool]] | None = None

    async def _profile(self, user_id: str) -> dict[str, Any]:
        user = await self.accounts.get_user(user_id)
        content: dict[str, Any] = {}
        if user is not None:
            if user.displayname:
                content["displayname"] = user.displayname
            if user.avatar_url:
                content["avatar_url"] = user.avatar_url
        return content

    async def check_invitee(self, user_id: str) -> None:
        parts = split_user_id(user_id)
        if parts is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {user_id!r}")
        if parts[1] != self.server_name:
            if self.remote_invite is None:
                raise MatrixError(403, "M_FORBIDDEN", "Inviting users of other servers needs federation")
            return
        user = await self.accounts.get_user(user_id)
        if user is None or user.deactivated:
            raise not_found(f"Unknown user {user_id}")

    async def resolve_room(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            return await self.directory.resolve(room_id_or_alias)
        if not room_id_or_alias.startswith("!") or len(room_id_or_alias.encode()) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "Expected a room ID or alias")
        return room_id_or_alias

    async def _member_event(self, room_id: str, user_id: str) -> StoredEvent | None:
        return await self.room_events.state_event(room_id, "m.room.member", user_id)

    async def _current(self, room_id: str, user_id: str) -> str | None:
        event = await self._member_event(room_id, user_id)
        return event.content.get("membership") if event else None

    async def join_local(self, user_id: str, room_id: str, reason: str | None = None) -> StoredEvent:
        content = {"membership": "join", **await self._profile(user_id)}
        if reason:
            content["reason"] = reason
        return await self.room_events.send(user_id, room_id, "m.room.member", content, state_key=user_id)

    async def join(
        self, user_id: str, room_id_or_alias: str, reason: str | None = None, via: list[str] | None = None
    ) -> str:
        alias_servers: list[str] = []
        if room_id_or_alias.startswith("#"):
            room_id, alias_servers = await self.directory.resolve_with_servers(room_id_or_alias)
        else:
            room_id = await self.resolve_room(room_id_or_alias)
        if self.room_blocked is not None and await self.room_blocked(room_id):
            raise forbidden("This room has been blocked on this server")
        try:
            await self.room_events.head(room_id)
        except MatrixError:
            if self.remote_join is None:
                raise not_found("No known room with that ID (joining rooms on other servers needs federation)") from None
            servers = list(via or [])
            invited = await self.rooms.get_membership(room_id, user_id)
            if invited is not None and invited.membership == "invite":
                servers.append(invited.sender.split(":", 1)[1])
            if ":" in room_id:
                servers.append(room_id.split(":", 1)[1])
            servers = alias_servers + servers
            content = {"membership": "join", **await self._profile(user_id)}
            if reason:
                content["reason"] = reason
            await self.remote_join(user_id, room_id, [s for s in dict.fromkeys(servers) if s != self.server_name], content)
            return room_id
        await self.join_local(user_id, room_id, reason)
        return room_id

    async def invite(
        self, sender: str, room_id: str, target: str, *, reason: str | None = None, is_direct: bool = False
    ) -> StoredEvent:
        await self.check_invitee(target)
        await self.room_events.head(room_id)
        current = await self._current(room_id, target)
        if current == "join":
            raise forbidden(f"{target} is already in the room")
        if current == "ban":
            raise forbidden(f"{target} is banned from the room")
        content: dict[str, Any] = {"membership": "invite", **await self._profile(target)}
        if is_direct:
            content["is_direct"] = True
        if reason:
            content["reason"] = reason
        countersign = None
        remote_invite = self.remote_invite
        if remote_invite is not None and target.split(":", 1)[1] != self.server_name:

            async def countersign(event_id: str, pdu: dict[str, Any]) -> dict[str, Any]:
                return await remote_invite(room_id, event_id, pdu)

        return await self.room_events.send(
            sender, room_id, "m.room.member", content, state_key=target, countersign=countersign
        )

    async def leave(self, user_id: str, room_id: str, reason: str | None = None) -> None:
        if self.remote_leave is not None and await self._leave_remote(user_id, room_id, reason):
            return
        await self.room_events.head(room_id)
        current = await self._current(room_id, user_id)
        if current in (None, "leave"):
            # Leaving a room you are not in changes nothing (and must not create an
            # event the auth rules would reject).
            if current is None:
                raise forbidden("You are not in this room")
            return
        await self._set(user_id, room_id, user_id, "leave", reason)

    async def leave_everything(self, user_id: str) -> None:
        """Leave every room, reject every invite and rescind every knock (a
        deactivated account's way out: its members see it go). A room that refuses
        is logged and skipped, so one broken room cannot keep the rest."""
        for membership in await self.rooms.rooms_for_user(user_id, ("join", "invite", "knock")):
            try:
                await self.leave(user_id, membership.room_id)
            except MatrixError as exc:
                logger.warning("%s could not leave %s: %s", user_id, membership.room_id, exc)

    async def kick(self, sender: str, room_id: str, target: str, reason: str | None) -> None:
        await self.room_events.head(room_id)
        if await self._current(room_id, target) not in ("join", "invite", "knock"):
            raise forbidden(f"{target} is not in the room")
        await self._set(sender, room_id, target, "leave", reason)

    async def ban(self, sender: str, room_id: str, target: str, reason: str | None) -> None:
        if split_user_id(target) is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        await self.room_events.head(room_id)
        await self._set(sender, room_id, target, "ban", reason)

    async def unban(self, sender: str, room_id: str, target: str, reason: str | None) -> None:
        await self.room_events.head(room_id)
        if await self._current(room_id, target) != "ban":
            raise forbidden(f"{target} is not banned")
        await self._set(sender, room_id, target, "leave", reason)

    async def _leave_remote(self, user_id: str, room_id: str, reason: str | None) -> bool:
        """Leave through another server when our membership is a remote invite or knock
        (an outlier: we are not in the room); False when the leave is a local event."""
        assert self.remote_leave is not None
        membership = await self.rooms.get_membership(room_id, user_id)
        if membership is None or membership.membership not in ("invite", "knock", "leave"):
            return False
        event = await self.room_events.events.get_event(membership.event_id)
        if event is None or not event.outlier:
            return False
        if membership.membership == "leave":
            return True  # already left a room we are not in: nothing to do
        servers = [membership.sender.split(":", 1)[1]]
        unsigned = event.pdu.get("unsigned")
        stripped = unsigned.get("knock_room_state") or unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
        if isinstance(stripped, list):
            servers += [s["sender"].split(":", 1)[1] for s in stripped if isinstance(s, dict) and ":" in str(s.get("sender"))]
        if ":" in room_id:
            servers.append(room_id.split(":", 1)[1])
        await self.remote_leave(user_id, room_id, [s for s in dict.fromkeys(servers) if s != self.server_name], reason)
        return True

    async def knock(
        self, user_id: str, room_id_or_alias: str, reason: str | None, via: list[str] | None = None
    ) -> str:
        alias_servers: list[str] = []
        if room_id_or_alias.startswith("#"):
            room_id, alias_servers = await self.directory.resolve_with_servers(room_id_or_alias)
        else:
            room_id = await self.resolve_room(room_id_or_alias)
        content: dict[str, Any] = {"membership": "knock", **await self._profile(user_id)}
        if reason:
            content["reason"] = reason
        try:
            await self.room_events.head(room_id)
        except MatrixError:
            if self.remote_knock is None:
                raise
            servers = alias_servers + list(via or [])
            if ":" in room_id:
                servers.append(room_id.split(":", 1)[1])
            await self.remote_knock(user_id, room_id, [s for s in dict.fromkeys(servers) if s != self.server_name], content)
            return room_id
        await self.room_events.send(user_id, room_id, "m.room.member", content, state_key=user_id)
        return room_id

    async def forget(self, user_id: str, room_id: str) -> None:
        membership = await self.rooms.get_membership(room_id, user_id)
        if membership is None:
            raise not_found("You were never in this room")
        if membership.membership in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "Leave the room before forgetting it")
        await self.rooms.forget(room_id, user_id)

    async def _set(self, sender: str, room_id: str, target: str, membership: str, reason: str | None) -> None:
        content: dict[str, Any] = {"membership": membership}
        if reason:
            content["reason"] = reason
        await self.room_events.send(sender, room_id, "m.room.member", content, state_key=target)

    async def profile_changed(self, user_id: str) -> None:
        """Send a fresh member event with the new profile into every joined room."""
        profile = await self._profile(user_id)
        for membership in await self.rooms.rooms_for_user(user_id):
            current = await self._member_event(membership.room_id, user_id)
            if current is None or current.content.get("membership") != "join":
                continue
            content = {k: v for k, v in current.content.items() if k not in ("displayname", "avatar_url")}
            content.update(profile)
            if content == current.content:
                continue
            try:
                await self.room_events.send(user_id, membership.room_id, "m.room.member", content, state_key=user_id)
            except MatrixError:
                # A room whose rules now refuse the update keeps the old profile.
                continue

