"""The requester's own account: whoami, password change, deactivation."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver import uia
from homeserver.auth import require_user
from homeserver.http import Body, json_response, read_model


class PasswordBody(Body):
    new_password: str
    logout_devices: bool = True
    auth: dict[str, Any] | None = None


class DeactivateBody(Body):
    auth: dict[str, Any] | None = None
    erase: bool = False
    id_server: str | None = None


async def whoami(request: Request) -> Response:
    requester = await require_user(request)
    return json_response({"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": False})


async def require_password(request: Request, auth: dict[str, Any] | None, user_id: str) -> None:
    """UIA with m.login.password for a sensitive request by `user_id`."""
    hs = request.app.state.hs
    await hs.uia.require(
        auth,
        [[uia.PASSWORD]],
        {uia.PASSWORD: uia.password_stage(user_id, hs.account_service.verify_password)},
        request_summary=f"{request.method} {request.url.path}",
        user_id=user_id,
    )


async def change_password(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, PasswordBody)
    await require_password(request, body.auth, requester.user_id)
    await request.app.state.hs.account_service.change_password(
        requester.user_id,
        body.new_password,
        logout_devices=body.logout_devices,
        keep_device_id=requester.device_id,
    )
    return json_response({})


async def deactivate(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, DeactivateBody, allow_empty=True)
    await require_password(request, body.auth, requester.user_id)
    await request.app.state.hs.account_service.deactivate(requester.user_id, erase=body.erase)
    return json_response({"id_server_unbind_result": "no-support"})
