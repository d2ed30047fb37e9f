"""Refusing outbound connections to blocked IP ranges (`federation.ip_range_blocklist`).

The check sits where the connection is made, in the httpcore network backend of the
federation HTTP client: the host name is resolved here, every address is checked, and
the socket is opened to a checked address, never to a name resolved again later. So
it covers everything that client fetches — federation requests, `.well-known`
lookups, remote media and any redirect a media origin sends — and a DNS answer that
changes between check and connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from httpcore import AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream

from homeserver.ip_ranges import IPAddress, IPRangeFilter

logger = logging.getLogger(__name__)

class BlockedAddress(httpcore.ConnectError):
    """The destination resolved only to blocked addresses (a connect error to callers)."""


async def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), timeout
        )
    except (TimeoutError, OSError) as exc:
        raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Strip an IPv6 zone (fe80::1%eth0) before parsing.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class FilteringBackend(AsyncNetworkBackend):
    """httpcore's default backend, connecting only to addresses the filter allows."""

    def __init__(self, ip_filter: IPRangeFilter) -> None:
        self.filter = ip_filter
        self._inner = AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        addresses = await _resolve(host, port, timeout)
        usable = [a for a in addresses if not self.filter.is_blocked(a)]
        if not usable:
            logger.warning(
                "Refused outbound connection to %s:%d: %s in a blocked IP range",
                host, port, ", ".join(map(str, addresses)) or "no address",
            )
            raise BlockedAddress(f"{host} resolves only to blocked IP addresses")
        last: Exception | None = None
        for address in usable:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for federation")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def filtering_transport(ip_filter: IPRangeFilter, **transport_options: Any) -> httpx.AsyncHTTPTransport:
    """An httpx transport (same options as httpx.AsyncHTTPTransport) whose connections
    go through FilteringBackend."""
    transport = httpx.AsyncHTTPTransport(**transport_options)
    pool = transport._pool
    # httpx builds its httpcore pool itself and has no option for the network backend;
    # the pool keeps it in this attribute (httpcore 1.x). Fail loudly if that changes
    # rather than silently connecting anywhere.
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("unsupported httpx/httpcore version for the IP range blocklist")
    pool._network_backend = FilteringBackend(ip_filter)
    return transport
