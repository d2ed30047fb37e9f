"""The federation side of the server, as the homeserver sees it.

`HomeServer` holds a `Federation` only when `federation.enabled` is true; with it off,
nothing under `federation/` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signedjson.types import SigningKey

from federation.client import FederationClient, FederationError
from federation.key_fetcher import KeyFetcher
from homeserver.config import FederationSettings
from homeserver.errors import MatrixError


class Federation:
    def __init__(self, server_name: str, signing_key: Callable[[], SigningKey], settings: FederationSettings) -> None:
        self.server_name = server_name
        self.client = FederationClient(server_name, signing_key, settings)
        self.keys = KeyFetcher(self.client)

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

    async def close(self) -> None:
        await self.client.close()
