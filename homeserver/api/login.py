"""Logging in and out (spec: Client-Server API, "Login" and "Logout")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import require_user
from homeserver.errors import MatrixError
from homeserver.http import Body, json_response, read_model

PASSWORD_LOGIN = "m.login.password"


class LoginBody(Body):
    type: str
    identifier: dict[str, Any] | None = None
    user: str | None = None  # deprecated form of identifier m.id.user
    password: str | None = None
    device_id: str | None = None
    initial_device_display_name: str | None = None
    refresh_token: bool = False


async def login_flows(request: Request) -> Response:
    return json_response({"flows": [{"type": PASSWORD_LOGIN}]})


def login_user_of(identifier: dict[str, Any] | None, legacy_user: str | None) -> str:
    """The user string a client names, from `identifier` (m.id.user) or legacy `user`."""
    if identifier is not None:
        kind = identifier.get("type")
        if kind != "m.id.user":
            raise MatrixError(400, "M_UNKNOWN", f"Unsupported identifier type {kind!r}")
        user = identifier.get("user")
    else:
        user = legacy_user
    if user is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing user identifier")
    if not isinstance(user, str) or not user:
        raise MatrixError(400, "M_BAD_JSON", "identifier.user must be a non-empty string")
    return user


async def login(request: Request) -> Response:
    hs = request.app.state.hs
    client = request.client.host if request.client else "unknown"
    hs.ratelimiter.check("login", client, hs.config.rate_limits.login)
    body = await read_model(request, LoginBody)
    if body.type != PASSWORD_LOGIN:
        raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {body.type!r}")
    if body.password is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing password")
    user_id = await hs.account_service.resolve_login_user(login_user_of(body.identifier, body.user))
    # A second, per-account bucket stops password guessing spread over many addresses.
    hs.ratelimiter.check("login-account", user_id, hs.config.rate_limits.login)
    session = await hs.account_service.login(
        user_id, body.password, body.device_id, body.initial_device_display_name, client
    )
    return json_response(
        {
            "user_id": session.user_id,
            "access_token": session.access_token,
            "device_id": session.device_id,
            "home_server": hs.server_name,
            "well_known": {"m.homeserver": {"base_url": hs.config.client_base_url}},
        }
    )


async def logout(request: Request) -> Response:
    requester = await require_user(request)
    await request.app.state.hs.devices.delete_devices(requester.user_id, [requester.device_id])
    return json_response({})


async def logout_all(request: Request) -> Response:
    requester = await require_user(request)
    await request.app.state.hs.devices.delete_other_devices(requester.user_id, None)
    return json_response({})
