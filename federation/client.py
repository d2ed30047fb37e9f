"""Outgoing federation requests: resolved, signed with X-Matrix, JSON in and out."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from signedjson.types import SigningKey

from federation.discovery import ServerResolver
from federation.ip_blocklist import filtering_transport
from federation.request_auth import authorization_header
from homeserver.config import FederationSettings
from homeserver.ip_ranges import IPRangeFilter

MAX_RESPONSE_BYTES = 50 * 1024 * 1024


class FederationError(Exception):
    def __init__(self, destination: str, status: int | None, body: Any, message: str) -> None:
        super().__init__(f"{destination}: {message}")
        self.destination = destination
        self.status = status
        self.body = body


def tls_verification(settings: FederationSettings) -> ssl.SSLContext | bool:
    if not settings.verify_tls:
        return False
    if settings.ca_file:
        return ssl.create_default_context(cafile=settings.ca_file)
    return True


class FederationClient:
    def __init__(self, server_name: str, signing_key: Callable[[], SigningKey], settings: FederationSettings) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self.settings = settings
        ip_filter = IPRangeFilter(settings.ip_range_blocklist, settings.ip_range_allowlist)
        self.http = httpx.AsyncClient(
            # Every connection of this client checks the address it goes to.
            transport=filtering_transport(
                ip_filter,
                verify=tls_verification(settings),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            ),
            timeout=httpx.Timeout(30.0, connect=10.0),
            headers={"User-Agent": "homeserver/0.1"},
            # No proxies from the environment: a proxy would connect where we cannot check.
            trust_env=False,
        )
        self.resolver = ServerResolver(self.http)

    def allowed(self, server_name: str) -> bool:
        host = server_name
        if self.settings.domain_allowlist is not None and host not in self.settings.domain_allowlist:
            return False
        return host not in self.settings.domain_denylist

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        content: Any | None = None,
        signed: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return the decoded JSON body; FederationError otherwise."""
        if not self.allowed(destination):
            raise FederationError(destination, None, None, "federation with this server is not allowed")
        endpoint = await self.resolver.resolve(destination)
        uri = path + ("?" + urlencode(query, doseq=True) if query else "")
        headers = {"Host": endpoint.host_header}
        body: bytes | None = None
        if content is not None:
            body = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = authorization_header(
                method, uri, self.server_name, destination, content, self._signing_key()
            )
        try:
            response = await self.http.request(
                method,
                endpoint.base_url + uri,
                content=body,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                extensions={"sni_hostname": endpoint.host},
            )
        except httpx.HTTPError as exc:
            raise FederationError(destination, None, None, f"request failed: {exc!r}") from None
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise FederationError(destination, response.status_code, None, "response too large")
        try:
            decoded = response.json()
        except ValueError:
            decoded = None
        if response.status_code != 200:
            raise FederationError(destination, response.status_code, decoded, f"HTTP {response.status_code}")
        return decoded

    async def close(self) -> None:
        await self.http.aclose()
