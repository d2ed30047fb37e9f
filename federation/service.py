"""The federation side of the server, as the homeserver sees it.

`HomeServer` holds a `Federation` only when `federation.enabled` is true; with it off,
nothing under `federation/` is imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from signedjson.types import SigningKey

from federation.backfill import Backfiller
from federation.client import FederationClient, FederationError
from federation.device_lists import DeviceListEdus
from federation.e2ee import RemoteKeys
from federation.edus import Edus
from federation.invites import InviteSender
from federation.key_fetcher import KeyFetcher
from federation.knock import RemoteKnocker
from federation.leave import RemoteLeaver
from federation.media import RemoteMediaFetcher
from federation.notary import Notary
from federation.public_rooms import RemotePublicRooms
from federation.remote_join import RemoteJoiner
from federation.sender import FederationSender
from federation.transactions import TransactionHandler
from homeserver.config import FederationSettings
from homeserver.errors import MatrixError
from storage.federation import OutboxStore

EduHandler = Callable[[str, Any], Awaitable[None]]


class Federation:
    def __init__(
        self, hs: Any, server_name: str, signing_key: Callable[[], SigningKey], settings: FederationSettings
    ) -> None:
        self.server_name = server_name
        self.client = FederationClient(server_name, signing_key, settings)
        self.keys = KeyFetcher(self.client)
        self.transactions = TransactionHandler(hs)
        self.sender = FederationSender(hs, OutboxStore(hs.db))
        self.joiner = RemoteJoiner(hs)
        self.invites = InviteSender(hs)
        # History from before our join, leaves and knocks through resident servers.
        self.backfiller = Backfiller(hs)
        self.leaver = RemoteLeaver(hs)
        self.knocker = RemoteKnocker(hs)
        # Other servers' media for our clients: the media service's `remote`.
        self.media = RemoteMediaFetcher(hs, self.client)
        # Other servers' public room directories for our clients.
        self.public_rooms = RemotePublicRooms(self.client)
        # Other servers' keys for servers that use us as a notary.
        self.notary = Notary(hs, self.client)
        # EDU type -> handler(origin, content); other parts of the server register here.
        self.edu_handlers: dict[str, EduHandler] = {}
        self.edus = Edus(hs)
        self.edus.register(self.edu_handlers)
        # End-to-end encryption across servers: other servers' users' keys for our
        # clients, and device-list, cross-signing, to-device and presence EDUs.
        self.e2ee = RemoteKeys(hs)
        self.device_lists = DeviceListEdus(hs, self.e2ee)
        self.device_lists.register(self.edu_handlers)
        hs.room_events.listeners.append(self.device_lists.on_event)
        hs.e2ee.remote = self.e2ee
        hs.e2ee.remote_edus = self.device_lists
        hs.presence.is_local = hs.is_local_user
        hs.presence.local_changed = self.device_lists.local_presence_changed

    async def start(self) -> None:
        await self.sender.start()

    async def query_profile(self, user_id: str, field: str | None = None) -> dict[str, Any]:
        """A remote user's profile (GET /_matrix/federation/v1/query/profile)."""
        destination = user_id.split(":", 1)[1]
        query = {"user_id": user_id}
        if field is not None:
            query["field"] = field
        try:
            body = await self.client.request("GET", destination, "/_matrix/federation/v1/query/profile", query=query)
        except FederationError as exc:
            if exc.status == 404:
                raise MatrixError(404, "M_NOT_FOUND", "Profile not found") from None
            raise MatrixError(502, "M_UNKNOWN", f"Could not reach {destination}") from None
        if not isinstance(body, dict):
            raise MatrixError(502, "M_UNKNOWN", "Bad profile response from the remote server")
        return {k: v for k, v in body.items() if k in ("displayname", "avatar_url") and isinstance(v, str)}

    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """Resolve another server's alias (GET /_matrix/federation/v1/query/directory)."""
        destination = alias.split(":", 1)[1]
        try:
            body = await self.client.request(
                "GET", destination, "/_matrix/federation/v1/query/directory", query={"room_alias": alias}
            )
        except FederationError as exc:
            if exc.status == 404:
                raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found") from None
            raise MatrixError(502, "M_UNKNOWN", f"Could not reach {destination}") from None
        room_id = body.get("room_id") if isinstance(body, dict) else None
        servers = body.get("servers") if isinstance(body, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(502, "M_UNKNOWN", "Bad directory response from the remote server")
        servers = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        return room_id, servers or [destination]

    async def close(self) -> None:
        await self.sender.stop()
        await self.client.close()
