"""Where to reach another server (spec: Server-Server API, "Resolving server names").

A server name with an explicit port, or an IP literal, is contacted directly. Other
names are looked up through `/.well-known/matrix/server`, falling back to port 8448.
SRV records are not consulted (the spec makes them optional).
"""

from __future__ import annotations

import ipaddress
import json
import time

import httpx
import msgspec

DEFAULT_PORT = 8448
WELL_KNOWN_CACHE_MS = 24 * 60 * 60 * 1000
WELL_KNOWN_FAILURE_CACHE_MS = 10 * 60 * 1000
MAX_WELL_KNOWN_BYTES = 50 * 1024


class Endpoint(msgspec.Struct, frozen=True):
    host: str
    port: int
    # The Host header and TLS server name to present.
    host_header: str

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def split_server_name(server_name: str) -> tuple[str, int | None]:
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = server_name.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return server_name, None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ServerResolver:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._cache: dict[str, tuple[Endpoint, int]] = {}

    async def resolve(self, server_name: str) -> Endpoint:
        now = int(time.time() * 1000)
        cached = self._cache.get(server_name)
        if cached is not None and cached[1] > now:
            return cached[0]
        host, port = split_server_name(server_name)
        if port is not None or _is_ip(host):
            endpoint = Endpoint(host, port or DEFAULT_PORT, server_name)
            self._cache[server_name] = (endpoint, now + WELL_KNOWN_CACHE_MS)
            return endpoint
        delegated = await self._well_known(host)
        if delegated is None:
            endpoint = Endpoint(host, DEFAULT_PORT, host)
            self._cache[server_name] = (endpoint, now + WELL_KNOWN_FAILURE_CACHE_MS)
            return endpoint
        d_host, d_port = split_server_name(delegated)
        endpoint = Endpoint(d_host, d_port or DEFAULT_PORT, delegated)
        self._cache[server_name] = (endpoint, now + WELL_KNOWN_CACHE_MS)
        return endpoint

    async def _well_known(self, host: str) -> str | None:
        try:
            response = await self.http.get(f"https://{host}/.well-known/matrix/server", timeout=10)
        except httpx.HTTPError:
            return None
        if response.status_code != 200 or len(response.content) > MAX_WELL_KNOWN_BYTES:
            return None
        try:
            value = json.loads(response.content).get("m.server")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and value else None
