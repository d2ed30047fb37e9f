"""The federation listener's application: the Server-Server API routes."""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from federation import (
    e2ee,
    invites,
    join,
    knock,
    leave,
    media,
    notary,
    public_rooms,
    room_api,
    transactions,
)
from federation.inbound_auth import authenticate
from federation.keys import server_keys_response
from homeserver.errors import MatrixError
from homeserver.http import json_response
from homeserver.identifiers import split_user_id

FED_V1 = "/_matrix/federation/v1"


async def server_keys(request: Request) -> Response:
    hs = request.app.state.hs
    return json_response(server_keys_response(hs.server_name, hs.signing_key, int(time.time() * 1000)))


async def version(request: Request) -> Response:
    return json_response({"server": {"name": "homeserver", "version": "0.1.0"}})


async def query_profile(request: Request) -> Response:
    await authenticate(request)
    hs = request.app.state.hs
    user_id = request.query_params.get("user_id")
    if user_id is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing user_id")
    parts = split_user_id(user_id)
    if parts is None or parts[1] != hs.server_name:
        raise MatrixError(400, "M_INVALID_PARAM", "Not a user of this server")
    user = await hs.accounts.get_user(user_id)
    if user is None or user.deactivated:
        raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
    profile: dict[str, Any] = {}
    if user.displayname:
        profile["displayname"] = user.displayname
    if user.avatar_url:
        profile["avatar_url"] = user.avatar_url
    field = request.query_params.get("field")
    if field is not None:
        if field not in ("displayname", "avatar_url"):
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown profile field")
        profile = {k: v for k, v in profile.items() if k == field}
    return json_response(profile)


async def query_directory(request: Request) -> Response:
    await authenticate(request)
    hs = request.app.state.hs
    alias = request.query_params.get("room_alias")
    if alias is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing room_alias")
    if not alias.startswith("#") or alias.split(":", 1)[-1] != hs.server_name:
        raise MatrixError(404, "M_NOT_FOUND", "Not an alias of this server")
    room_id, _ = await hs.directory.resolve_with_servers(alias)
    members = await hs.room_store.members(room_id, ("join",))
    servers = sorted({m.user_id.split(":", 1)[1] for m in members} | {hs.server_name})
    servers.remove(hs.server_name)
    return json_response({"room_id": room_id, "servers": [hs.server_name, *servers]})


def federation_routes() -> list[Route]:
    return [
        Route("/_matrix/key/v2/server", server_keys, methods=["GET"]),
        Route("/_matrix/key/v2/query/{server_name}", notary.query_one, methods=["GET"]),
        Route("/_matrix/key/v2/query", notary.query_many, methods=["POST"]),
        Route(f"{FED_V1}/publicRooms", public_rooms.serve_get, methods=["GET"]),
        Route(f"{FED_V1}/publicRooms", public_rooms.serve_post, methods=["POST"]),
        Route(f"{FED_V1}/version", version, methods=["GET"]),
        Route(f"{FED_V1}/query/profile", query_profile, methods=["GET"]),
        Route(f"{FED_V1}/query/directory", query_directory, methods=["GET"]),
        Route(f"{FED_V1}/make_join/{{room_id}}/{{user_id}}", join.make_join, methods=["GET"]),
        Route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", join.send_join, methods=["PUT"]),
        Route(f"{FED_V1}/make_leave/{{room_id}}/{{user_id}}", leave.make_leave, methods=["GET"]),
        Route("/_matrix/federation/v2/send_leave/{room_id}/{event_id}", leave.send_leave, methods=["PUT"]),
        Route(f"{FED_V1}/make_knock/{{room_id}}/{{user_id}}", knock.make_knock, methods=["GET"]),
        Route(f"{FED_V1}/send_knock/{{room_id}}/{{event_id}}", knock.send_knock, methods=["PUT"]),
        Route(f"{FED_V1}/send/{{txn_id}}", transactions.send_transaction, methods=["PUT"]),
        Route("/_matrix/federation/v2/invite/{room_id}/{event_id}", invites.receive_invite, methods=["PUT"]),
        Route(f"{FED_V1}/event/{{event_id}}", room_api.get_event, methods=["GET"]),
        Route(f"{FED_V1}/state_ids/{{room_id}}", room_api.state_ids, methods=["GET"]),
        Route(f"{FED_V1}/state/{{room_id}}", room_api.state, methods=["GET"]),
        Route(f"{FED_V1}/backfill/{{room_id}}", room_api.backfill, methods=["GET"]),
        Route(f"{FED_V1}/get_missing_events/{{room_id}}", room_api.get_missing_events, methods=["POST"]),
        Route(f"{FED_V1}/media/download/{{media_id}}", media.serve_download, methods=["GET"]),
        Route(f"{FED_V1}/media/thumbnail/{{media_id}}", media.serve_thumbnail, methods=["GET"]),
        Route(f"{FED_V1}/user/devices/{{user_id}}", e2ee.user_devices, methods=["GET"]),
        Route(f"{FED_V1}/user/keys/query", e2ee.user_keys_query, methods=["POST"]),
        Route(f"{FED_V1}/user/keys/claim", e2ee.user_keys_claim, methods=["POST"]),
    ]


def build_federation_app(hs: Any, exception_handlers: dict[Any, Any], middleware: Any) -> ASGIApp:
    app = Starlette(routes=federation_routes(), exception_handlers=exception_handlers)
    app.state.hs = hs
    app.state.federation = hs.federation
    return middleware(app)
