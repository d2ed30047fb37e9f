"""Checking who sent an incoming federation request."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from federation.request_auth import AuthHeaderError, parse_authorization, verify_request
from homeserver.errors import MatrixError
from homeserver.events import SignatureError

MAX_FEDERATION_BODY = 10 * 1024 * 1024


def unauthorized(reason: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", reason)


async def authenticate(request: Request) -> tuple[str, Any]:
    """(origin server name, decoded JSON body or None) of a signed request, else 401."""
    federation = request.app.state.federation
    header = request.headers.get("authorization")
    if header is None:
        raise unauthorized("Missing X-Matrix Authorization header")
    try:
        auth = parse_authorization(header)
    except AuthHeaderError as exc:
        raise unauthorized(str(exc)) from None
    if not federation.client.allowed(auth.origin):
        raise MatrixError(403, "M_FORBIDDEN", "Federation with your server is not allowed")
    raw = await request.body()
    if len(raw) > MAX_FEDERATION_BODY:
        raise MatrixError(413, "M_TOO_LARGE", "Request body too large")
    content: Any = None
    if raw:
        try:
            content = json.loads(raw)
        except ValueError:
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON") from None
    uri = request.url.path
    if request.url.query:
        uri += "?" + request.url.query
    # Verify against the raw path as sent: percent-encoding must match the signature.
    raw_path = request.scope.get("raw_path")
    if isinstance(raw_path, bytes):
        uri = raw_path.decode("latin-1") + ("?" + request.url.query if request.url.query else "")
    try:
        key = await federation.keys.verify_key(auth.origin, auth.key_id)
        verify_request(auth, request.method, uri, federation.server_name, content, key)
    except SignatureError as exc:
        raise unauthorized(f"Invalid signature: {exc.reason}") from None
    except Exception as exc:  # key fetch failures: the origin cannot be verified
        raise unauthorized(f"Could not verify the request: {exc}") from None
    federation.sender.peer_is_back(auth.origin)
    return auth.origin, content
