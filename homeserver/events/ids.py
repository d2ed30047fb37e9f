"""Identifier grammar checks needed by the event rules (appendices, "Identifier Grammar").

Kept lenient where the spec says servers must accept historical forms over
federation (user ID localparts), strict where the grammar is fixed (server names).
"""

from __future__ import annotations

import re

MAX_ID_BYTES = 255

# server_name = hostname [ ":" port ]; hostname = IPv4 / "[" IPv6 "]" / dns-name
_DNS_NAME = re.compile(r"^[A-Za-z0-9\-.]{1,255}$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]{2,45}\]$")
_PORT = re.compile(r"^\d{1,5}$")


def is_valid_server_name(name: str) -> bool:
    """True if ``name`` matches the server name grammar (host with optional port)."""
    if not isinstance(name, str) or not name:
        return False
    host, port = name, None
    if name.startswith("["):
        end = name.find("]")
        if end == -1:
            return False
        host, rest = name[: end + 1], name[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
        if not _IPV6.match(host):
            return False
    else:
        if ":" in name:
            host, port = name.rsplit(":", 1)
        if not (_IPV4.match(host) or _DNS_NAME.match(host)):
            return False
    return port is None or bool(_PORT.match(port))


def is_valid_user_id(user_id: object) -> bool:
    """True if ``user_id`` is an acceptable user ID for events.

    The localpart may use the historical character set (any code point except
    ``:`` and NUL, possibly empty), since servers MUST accept such senders over
    federation; the domain must be a valid server name and the whole ID fits in
    255 bytes.
    """
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    if len(user_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return False
    localpart, sep, domain = user_id[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    return is_valid_server_name(domain)


def domain_of(identifier: str) -> str:
    """The server name part of a ``&localpart:domain`` identifier.

    Raises ``ValueError`` if there is no domain part (e.g. v12 room IDs).
    """
    _, sep, domain = identifier.partition(":")
    if not sep:
        raise ValueError(f"identifier {identifier!r} has no domain")
    return domain
