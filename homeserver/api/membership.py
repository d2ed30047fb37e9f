"""Joining, leaving, inviting, kicking, banning, knocking and forgetting
(spec: Client-Server API, "Room membership")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homeserver.api.rooms import room_id_param
from homeserver.auth import require_user
from homeserver.http import Body, json_response, read_model


class ReasonBody(Body):
    reason: str | None = None


class TargetBody(Body):
    user_id: str
    reason: str | None = None


class InviteBody(TargetBody):
    is_direct: bool = False


async def join_by_id_or_alias(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, ReasonBody, allow_empty=True)
    # `via` (spec v1.12) and its older name `server_name` list servers to join through.
    via = request.query_params.getlist("via") + request.query_params.getlist("server_name")
    room_id = await request.app.state.hs.membership.join(
        requester.user_id, request.path_params["room_id_or_alias"], body.reason, via=via
    )
    return json_response({"room_id": room_id})


async def join(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, ReasonBody, allow_empty=True)
    room_id = await request.app.state.hs.membership.join(requester.user_id, room_id_param(request), body.reason)
    return json_response({"room_id": room_id})


async def knock(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, ReasonBody, allow_empty=True)
    via = request.query_params.getlist("via") + request.query_params.getlist("server_name")
    room_id = await request.app.state.hs.membership.knock(
        requester.user_id, request.path_params["room_id_or_alias"], body.reason, via=via
    )
    return json_response({"room_id": room_id})


async def leave(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, ReasonBody, allow_empty=True)
    await request.app.state.hs.membership.leave(requester.user_id, room_id_param(request), body.reason)
    return json_response({})


async def forget(request: Request) -> Response:
    requester = await require_user(request)
    await request.app.state.hs.membership.forget(requester.user_id, room_id_param(request))
    return json_response({})


async def invite(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, InviteBody)
    await request.app.state.hs.membership.invite(
        requester.user_id, room_id_param(request), body.user_id, reason=body.reason, is_direct=body.is_direct
    )
    return json_response({})


async def kick(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, TargetBody)
    await request.app.state.hs.membership.kick(requester.user_id, room_id_param(request), body.user_id, body.reason)
    return json_response({})


async def ban(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, TargetBody)
    await request.app.state.hs.membership.ban(requester.user_id, room_id_param(request), body.user_id, body.reason)
    return json_response({})


async def unban(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, TargetBody)
    await request.app.state.hs.membership.unban(requester.user_id, room_id_param(request), body.user_id, body.reason)
    return json_response({})
