"""Account registration (spec: Client-Server API, "Account registration and management")."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver import uia
from homeserver.errors import MatrixError, forbidden
from homeserver.http import Body, json_response, read_model


class RegisterBody(Body):
    username: str | None = None
    password: str | None = None
    device_id: str | None = None
    initial_device_display_name: str | None = None
    inhibit_login: bool = False
    refresh_token: bool = False
    auth: dict[str, Any] | None = None


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _token_usable(request: Request, token: str) -> bool:
    hs = request.app.state.hs
    if token in hs.config.registration.registration_tokens:
        return True
    stored = await hs.registration_tokens.get(token)
    return stored is not None and stored.usable(int(time.time() * 1000))


async def register(request: Request) -> Response:
    hs = request.app.state.hs
    config = hs.config
    kind = request.query_params.get("kind", "user")
    if kind == "guest":
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not enabled")
    if kind != "user":
        raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
    hs.ratelimiter.check("register", _client_ip(request), config.rate_limits.registration)
    if not config.registration.enabled:
        raise forbidden("Registration has been disabled")

    body = await read_model(request, RegisterBody)
    if body.username is not None:
        # Checked before UIA so that a client learns early that the name is taken.
        if not await hs.account_service.is_available(body.username):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")

    used_token: list[str] = []

    async def check_dummy(auth: dict[str, Any]) -> None:
        return None

    async def check_token(auth: dict[str, Any]) -> None:
        token = auth.get("token")
        if not isinstance(token, str) or not await _token_usable(request, token):
            raise MatrixError(401, "M_FORBIDDEN", "Invalid registration token")
        used_token.append(token)

    flows = [[uia.REGISTRATION_TOKEN]] if config.registration.require_token else [[uia.DUMMY]]
    await hs.uia.require(
        body.auth,
        flows,
        {uia.DUMMY: check_dummy, uia.REGISTRATION_TOKEN: check_token},
        request_summary="POST /register",
    )

    if used_token and used_token[0] not in config.registration.registration_tokens:
        if not await hs.registration_tokens.use(used_token[0], int(time.time() * 1000)):
            raise MatrixError(401, "M_FORBIDDEN", "Registration token is no longer valid")

    localpart = body.username or await hs.account_service.generate_localpart()
    session = await hs.account_service.register(
        localpart,
        body.password,
        device_id=body.device_id,
        device_display_name=body.initial_device_display_name,
        inhibit_login=body.inhibit_login,
        ip=_client_ip(request),
    )
    response: dict[str, Any] = {"user_id": session.user_id, "home_server": hs.server_name}
    if not body.inhibit_login:
        response["access_token"] = session.access_token
        response["device_id"] = session.device_id
    return json_response(response)


async def available(request: Request) -> Response:
    hs = request.app.state.hs
    hs.ratelimiter.check("register", _client_ip(request), hs.config.rate_limits.registration)
    username = request.query_params.get("username")
    if not username:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing username")
    if not await hs.account_service.is_available(username):
        raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
    return json_response({"available": True})


async def token_validity(request: Request) -> Response:
    hs = request.app.state.hs
    hs.ratelimiter.check("register", _client_ip(request), hs.config.rate_limits.registration)
    token = request.query_params.get("token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing token")
    return json_response({"valid": await _token_usable(request, token)})
