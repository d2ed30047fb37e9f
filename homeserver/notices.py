"""Server notices: messages from the operator to users (as Synapse's server notices).

Each user gets one notices room, created on first use by a system user
(`@<server_notices.system_user_localpart>:<server>`, itself created on demand). The room
is a private chat named after `server_notices.room_name`, tagged `m.server_notice` for
the user (clients list it apart), with `users_default: -10` so the user, who is only
invited and joins when their client accepts, cannot post in it. Notices are
`m.room.message` events sent by the system user.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError, not_found
from homeserver.identifiers import split_user_id, user_id_for
from homeserver.rooms.create import CreateRoomRequest
from storage.events import StoredEvent

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

logger = logging.getLogger(__name__)

SERVER_NOTICE_TAG = "m.server_notice"
NOTICES_DEVICE = "SERVER_NOTICES"


def notice_content(text: str) -> dict[str, Any]:
    """The content of a plain notice from the operator."""
    return {"msgtype": "m.server_notice", "body": text, "server_notice_type": "announcement"}


class ServerNotices:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.server_notices
        self.system_user = user_id_for(self.config.system_user_localpart, hs.server_name)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    async def _ensure_system_user(self) -> None:
        user = await self.hs.accounts.get_user(self.system_user)
        if user is None:
            created = await self.hs.accounts.create_user(
                self.system_user, None, int(time.time() * 1000), displayname=self.config.system_user_display_name
            )
            if created:
                logger.info("Created the server notices user %s", self.system_user)
            user = await self.hs.accounts.get_user(self.system_user)
        if user is None or user.deactivated or user.password_hash is not None:
            # A person registered this localpart first: notices must not come from them.
            raise MatrixError(
                400,
                "M_UNKNOWN",
                f"{self.system_user} is a regular account; set server_notices.system_user_localpart to a free name",
            )

    async def check_recipient(self, user_id: str) -> None:
        if not self.enabled:
            raise MatrixError(400, "M_UNKNOWN", "Server notices are not enabled on this server")
        parts = split_user_id(user_id)
        if parts is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        if parts[1] != self.hs.server_name:
            raise MatrixError(400, "M_UNKNOWN", "Server notices can only be sent to local users")
        if user_id == self.system_user:
            raise MatrixError(400, "M_INVALID_PARAM", "The server notices user cannot receive notices")
        user = await self.hs.accounts.get_user(user_id)
        if user is None or user.deactivated:
            raise not_found("User not found")

    async def room_for(self, user_id: str) -> str:
        """The user's notices room, created (and the user invited) when needed."""
        await self._ensure_system_user()
        room_id = await self.hs.admin_store.notice_room_for(self.system_user, user_id)
        if room_id is not None:
            return room_id

        async def no_publish(_room_id: str) -> None:
            return None

        room_id, _ = await self.hs.room_creator.create(
            self.system_user,
            CreateRoomRequest(
                preset="private_chat",
                name=self.config.room_name,
                power_level_content_override={"users_default": -10},
            ),
            no_publish,
        )
        await self.hs.account_data.put(user_id, "m.tag", {"tags": {SERVER_NOTICE_TAG: {}}}, room_id)
        await self.hs.membership.invite(self.system_user, room_id, user_id)
        logger.info("Created server notices room %s for %s", room_id, user_id)
        return room_id

    async def send(
        self,
        user_id: str,
        content: dict[str, Any],
        *,
        event_type: str = "m.room.message",
        state_key: str | None = None,
        txn_id: str | None = None,
    ) -> StoredEvent:
        await self.check_recipient(user_id)
        room_id = await self.room_for(user_id)
        txn = (self.system_user, NOTICES_DEVICE, txn_id) if txn_id is not None else None
        return await self.hs.room_events.send(
            self.system_user, room_id, event_type, content, state_key=state_key, txn=txn
        )
