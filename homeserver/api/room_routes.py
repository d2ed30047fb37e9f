"""The Client-Server API's room routes: rooms, membership, history, directory, account data."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from homeserver.api import account_data, directory, membership, room_history, rooms
from homeserver.errors import MatrixError

Handler = Callable[[Request], Awaitable[Response]]


def _no_control_characters(handler: Handler) -> Handler:
    """IDs, types, state keys, transaction IDs and tokens never contain NUL (which
    PostgreSQL cannot store in text and SQLite would keep silently): 400 up front."""

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        for name, value in request.path_params.items():
            if isinstance(value, str) and "\x00" in value:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid character in {name}")
        for name, value in request.query_params.multi_items():
            if "\x00" in value or "\x00" in name:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid character in query parameter {name[:50]!r}")
        return await handler(request)

    return checked

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


def room_routes() -> list[BaseRoute]:
    return [
        Route(route.path, _no_control_characters(route.endpoint), methods=route.methods)
        for route in _room_routes()
        if isinstance(route, Route)
    ]


def _room_routes() -> list[BaseRoute]:
    room = f"{V3}/rooms/{{room_id}}"
    return [
        Route(f"{V3}/createRoom", rooms.create_room, methods=["POST"]),
        Route(f"{V3}/joined_rooms", rooms.joined_rooms, methods=["GET"]),
        Route(f"{room}/send/{{event_type}}/{{txn_id}}", rooms.send_message, methods=["PUT"]),
        Route(f"{room}/state", rooms.get_state, methods=["GET"]),
        Route(f"{room}/state/{{event_type}}", rooms.get_state_event, methods=["GET"]),
        Route(f"{room}/state/{{event_type}}", rooms.put_state, methods=["PUT"]),
        Route(f"{room}/state/{{event_type}}/{{state_key:path}}", rooms.get_state_event, methods=["GET"]),
        Route(f"{room}/state/{{event_type}}/{{state_key:path}}", rooms.put_state, methods=["PUT"]),
        Route(f"{room}/redact/{{event_id}}/{{txn_id}}", rooms.redact, methods=["PUT"]),
        Route(f"{room}/event/{{event_id}}", rooms.get_event, methods=["GET"]),
        Route(f"{room}/members", rooms.members, methods=["GET"]),
        Route(f"{room}/joined_members", rooms.joined_members, methods=["GET"]),
        Route(f"{room}/report/{{event_id}}", rooms.report_event, methods=["POST"]),
        # Membership
        Route(f"{V3}/join/{{room_id_or_alias}}", membership.join_by_id_or_alias, methods=["POST"]),
        Route(f"{V3}/knock/{{room_id_or_alias}}", membership.knock, methods=["POST"]),
        Route(f"{room}/join", membership.join, methods=["POST"]),
        Route(f"{room}/leave", membership.leave, methods=["POST"]),
        Route(f"{room}/forget", membership.forget, methods=["POST"]),
        Route(f"{room}/invite", membership.invite, methods=["POST"]),
        Route(f"{room}/kick", membership.kick, methods=["POST"]),
        Route(f"{room}/ban", membership.ban, methods=["POST"]),
        Route(f"{room}/unban", membership.unban, methods=["POST"]),
        # History
        Route(f"{room}/messages", room_history.messages, methods=["GET"]),
        Route(f"{room}/context/{{event_id}}", room_history.context, methods=["GET"]),
        Route(f"{V1}/rooms/{{room_id}}/relations/{{event_id}}", room_history.relations, methods=["GET"]),
        Route(f"{V1}/rooms/{{room_id}}/relations/{{event_id}}/{{rel_type}}", room_history.relations, methods=["GET"]),
        Route(
            f"{V1}/rooms/{{room_id}}/relations/{{event_id}}/{{rel_type}}/{{event_type}}",
            room_history.relations,
            methods=["GET"],
        ),
        Route(f"{V1}/rooms/{{room_id}}/threads", room_history.threads, methods=["GET"]),
        # Aliases and directory
        Route(f"{V3}/directory/room/{{alias}}", directory.get_alias, methods=["GET"]),
        Route(f"{V3}/directory/room/{{alias}}", directory.put_alias, methods=["PUT"]),
        Route(f"{V3}/directory/room/{{alias}}", directory.delete_alias, methods=["DELETE"]),
        Route(f"{room}/aliases", directory.room_aliases, methods=["GET"]),
        Route(f"{V3}/directory/list/room/{{room_id}}", directory.get_visibility, methods=["GET"]),
        Route(f"{V3}/directory/list/room/{{room_id}}", directory.set_visibility, methods=["PUT"]),
        Route(f"{V3}/publicRooms", directory.public_rooms_get, methods=["GET"]),
        Route(f"{V3}/publicRooms", directory.public_rooms_post, methods=["POST"]),
        # Account data
        Route(f"{V3}/user/{{user_id}}/account_data/{{type}}", account_data.get_global, methods=["GET"]),
        Route(f"{V3}/user/{{user_id}}/account_data/{{type}}", account_data.put_global, methods=["PUT"]),
        Route(f"{V3}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{type}}", account_data.get_room, methods=["GET"]),
        Route(f"{V3}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{type}}", account_data.put_room, methods=["PUT"]),
    ]
