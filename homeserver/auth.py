"""Who is asking: access tokens to requesters.

Tokens are `Authorization: Bearer <token>` or the deprecated `access_token` query
parameter; both are accepted because older clients still send the latter.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import msgspec
from starlette.requests import Request

from homeserver.errors import MatrixError

# How often a device's "last seen" is written; more often only costs writes.
_LAST_SEEN_INTERVAL_MS = 5 * 60 * 1000


class Requester(msgspec.Struct, frozen=True):
    user_id: str
    device_id: str
    is_admin: bool
    token_hash: str


def new_access_token() -> str:
    return "mxa_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def access_token_of(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise MatrixError(401, "M_MISSING_TOKEN", "Authorization header is not a Bearer token")
    return request.query_params.get("access_token") or None


async def require_user(request: Request) -> Requester:
    """The requester, or 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN."""
    token = access_token_of(request)
    if token is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
    hs = request.app.state.hs
    token_hash = hash_token(token)
    owner = await hs.devices.get_token_owner(token_hash)
    if owner is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
    await _record_seen(request, owner.user_id, owner.device_id)
    return Requester(owner.user_id, owner.device_id, owner.is_admin, token_hash)


async def _record_seen(request: Request, user_id: str, device_id: str) -> None:
    hs = request.app.state.hs
    now = int(time.time() * 1000)
    key = (user_id, device_id)
    if now - hs.last_seen_written.get(key, 0) < _LAST_SEEN_INTERVAL_MS:
        return
    hs.last_seen_written[key] = now
    client = request.client.host if request.client else None
    await hs.devices.record_seen(user_id, device_id, now, client)
