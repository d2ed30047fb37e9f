"""Which IP addresses outbound requests may reach (`federation.ip_range_blocklist`,
`push.ip_range_blocklist`): checked on the resolved address, where the connection is
made, so that a server cannot be steered at its own network by a name or a redirect."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Unspecified addresses reach the local machine on most systems: always blocked.
_ALWAYS_BLOCKED = [ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128")]


class IPRangeFilter:
    def __init__(self, blocklist: Iterable[str], allowlist: Iterable[str]) -> None:
        self.blocked: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in blocklist]
        self.allowed: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in allowlist]

    def is_blocked(self, address: IPAddress) -> bool:
        # An IPv4 address written as IPv6 (::ffff:127.0.0.1) is the IPv4 address.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allowed if net.version == address.version):
            return False
        if any(address in net for net in _ALWAYS_BLOCKED if net.version == address.version):
            return True
        return any(address in net for net in self.blocked if net.version == address.version)
