"""Client-set account data, global and per room (spec: Client-Server API, "Client Config")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import Requester, require_user
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.http import json_response, read_json
from homeserver.push import PUSH_RULES_TYPE, push_rules_content

# Types the server manages itself; clients set them through their own endpoints.
SERVER_MANAGED = {"m.fully_read", "m.push_rules"}


def _own(request: Request, requester: Requester) -> None:
    if request.path_params["user_id"] != requester.user_id:
        raise forbidden("You can only access your own account data")


def _data_type(request: Request) -> str:
    data_type = request.path_params["type"]
    if not data_type or len(data_type.encode()) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid account data type")
    return data_type


async def get_global(request: Request) -> Response:
    requester = await require_user(request)
    _own(request, requester)
    data_type = _data_type(request)
    if data_type == PUSH_RULES_TYPE:
        # Always the current rules (as Synapse), also for a user who never changed one.
        hs = request.app.state.hs
        return json_response(push_rules_content(requester.user_id, await hs.push_rules.get(requester.user_id)))
    content = await request.app.state.hs.account_data.get(requester.user_id, data_type)
    if content is None:
        raise not_found("No account data of that type")
    return json_response(content)


async def put_global(request: Request) -> Response:
    requester = await require_user(request)
    _own(request, requester)
    data_type = _data_type(request)
    if data_type in SERVER_MANAGED:
        raise MatrixError(400, "M_BAD_JSON", f"{data_type} cannot be set through this API")
    content = await read_json(request)
    await request.app.state.hs.account_data.put(requester.user_id, data_type, content)
    return json_response({})


async def get_room(request: Request) -> Response:
    requester = await require_user(request)
    _own(request, requester)
    room_id = request.path_params["room_id"]
    if not room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    content = await request.app.state.hs.account_data.get(requester.user_id, _data_type(request), room_id)
    if content is None:
        raise not_found("No account data of that type")
    return json_response(content)


async def put_room(request: Request) -> Response:
    requester = await require_user(request)
    _own(request, requester)
    room_id = request.path_params["room_id"]
    if not room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    data_type = _data_type(request)
    if data_type in SERVER_MANAGED:
        raise MatrixError(400, "M_BAD_JSON", f"{data_type} cannot be set through this API")
    content = await read_json(request)
    await request.app.state.hs.account_data.put(requester.user_id, data_type, content, room_id)
    return json_response({})
