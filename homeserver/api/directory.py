"""Room aliases, directory visibility and the public room list
(spec: Client-Server API, "Room aliases" and "Listing rooms")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.api.rooms import room_id_param
from homeserver.auth import require_user
from homeserver.errors import MatrixError
from homeserver.http import Body, json_response, query_bool, query_int, read_model
from homeserver.rooms.directory import check_alias_syntax


class AliasBody(Body):
    room_id: str


class VisibilityBody(Body):
    visibility: str


class PublicRoomsFilter(Body):
    generic_search_term: str | None = None
    room_types: list[str | None] | None = None


class PublicRoomsBody(Body):
    limit: int | None = None
    since: str | None = None
    filter: PublicRoomsFilter | None = None
    server: str | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None


async def put_alias(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, AliasBody)
    alias = request.path_params["alias"]
    check_alias_syntax(alias)
    if not body.room_id.startswith("!") or len(body.room_id.encode()) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    await request.app.state.hs.directory.create_alias(
        alias, body.room_id, requester.user_id, is_server_admin=requester.is_admin
    )
    return json_response({})


async def get_alias(request: Request) -> Response:
    hs = request.app.state.hs
    room_id, servers = await hs.directory.resolve_with_servers(request.path_params["alias"])
    return json_response({"room_id": room_id, "servers": servers})


async def delete_alias(request: Request) -> Response:
    requester = await require_user(request)
    await request.app.state.hs.directory.delete_alias(
        requester.user_id, requester.is_admin, request.path_params["alias"]
    )
    return json_response({})


async def room_aliases(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    room_id = room_id_param(request)
    await hs.room_reader.require_member_or_readable(requester.user_id, room_id)
    return json_response({"aliases": await hs.alias_store.aliases_of(room_id)})


async def get_visibility(request: Request) -> Response:
    hs = request.app.state.hs
    room = await hs.room_store.get_room(room_id_param(request))
    if room is None:
        raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
    return json_response({"visibility": "public" if room.is_public else "private"})


async def set_visibility(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, VisibilityBody)
    if body.visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
    await request.app.state.hs.directory.set_visibility(
        requester.user_id, requester.is_admin, room_id_param(request), body.visibility == "public"
    )
    return json_response({})


async def public_rooms_get(request: Request) -> Response:
    limit = query_int(request, "limit")
    # `server` names another server: its directory is fetched over federation.
    return json_response(
        await request.app.state.hs.public_rooms.list(
            limit=limit,
            since=request.query_params.get("since"),
            search=None,
            server=request.query_params.get("server"),
            include_all_networks=query_bool(request, "include_all_networks"),
            third_party_instance_id=request.query_params.get("third_party_instance_id"),
        )
    )


async def public_rooms_post(request: Request) -> Response:
    await require_user(request)
    body = await read_model(request, PublicRoomsBody, allow_empty=True)
    search = body.filter.generic_search_term if body.filter else None
    # The spec puts `server` in the query string; older clients sent it in the body.
    server = request.query_params.get("server") or body.server
    result: dict[str, Any] = await request.app.state.hs.public_rooms.list(
        limit=body.limit,
        since=body.since,
        search=search,
        server=server,
        include_all_networks=body.include_all_networks,
        third_party_instance_id=body.third_party_instance_id,
    )
    return json_response(result)
