"""What the server is and can do: /versions, .well-known, /capabilities."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import require_user
from homeserver.http import json_response

# The spec releases whose Client-Server API shapes this server follows.
SPEC_VERSIONS = [f"v1.{minor}" for minor in range(1, 13)]
SUPPORTED_ROOM_VERSIONS = ("10", "11", "12")


async def versions(request: Request) -> Response:
    return json_response({"versions": SPEC_VERSIONS, "unstable_features": {}})


async def well_known_client(request: Request) -> Response:
    base = request.app.state.hs.config.client_base_url
    return json_response({"m.homeserver": {"base_url": base}})


async def well_known_server(request: Request) -> Response:
    config = request.app.state.hs.config
    federation = config.listeners.federation
    if federation is None or not config.federation.enabled:
        return json_response({"errcode": "M_NOT_FOUND", "error": "Federation is disabled"}, 404)
    host = config.server_name.rsplit(":", 1)[0] if not config.server_name.endswith("]") else config.server_name
    return json_response({"m.server": f"{host}:{federation.port}"})


async def capabilities(request: Request) -> Response:
    await require_user(request)
    config = request.app.state.hs.config
    return json_response(
        {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.room_versions": {
                    "default": config.default_room_version,
                    "available": {v: "stable" for v in SUPPORTED_ROOM_VERSIONS},
                },
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
                "m.get_login_token": {"enabled": False},
            }
        }
    )
