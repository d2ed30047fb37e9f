"""The public room directory over federation (spec: Server-Server API, "Public Room
Directory").

Serving: GET and POST /_matrix/federation/v1/publicRooms list our own directory to
signed requests, when `federation.allow_public_rooms_over_federation` is on (off, the
default as in Synapse, answers 403: the list is for our users unless the operator
says otherwise). Querying: `RemotePublicRooms.query` is what a client's
`/publicRooms?server=<other>` becomes.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationClient, FederationError
from federation.inbound_auth import authenticate
from federation.media import valid_server_name
from homeserver.errors import MatrixError
from homeserver.http import Body, json_response, parse, query_bool, query_int

logger = logging.getLogger(__name__)

PATH = "/_matrix/federation/v1/publicRooms"
# A remote directory is someone else's data: cap what we pass on to our client.
MAX_REMOTE_ROOMS = 500
REMOTE_TIMEOUT_S = 20


class PublicRoomsFilter(Body):
    generic_search_term: str | None = None
    room_types: list[str | None] | None = None


class PublicRoomsQuery(Body):
    limit: int | None = None
    since: str | None = None
    filter: PublicRoomsFilter | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None


# Serving


async def _serve(request: Request, query: PublicRoomsQuery) -> Response:
    hs = request.app.state.hs
    if query.include_all_networks and query.third_party_instance_id is not None:
        raise MatrixError(400, "M_INVALID_PARAM", "include_all_networks and third_party_instance_id exclude each other")
    if query.third_party_instance_id is not None:
        # No application services, so no third-party networks: nothing is listed on one.
        return json_response({"chunk": [], "total_room_count_estimate": 0})
    search = query.filter.generic_search_term if query.filter else None
    result: dict[str, Any] = await hs.public_rooms.list(limit=query.limit, since=query.since, search=search, server=None)
    return json_response(result)


def _check_allowed(request: Request) -> None:
    if not request.app.state.hs.config.federation.allow_public_rooms_over_federation:
        raise MatrixError(403, "M_FORBIDDEN", "This server does not share its public room directory")


async def serve_get(request: Request) -> Response:
    await authenticate(request)
    _check_allowed(request)
    query = PublicRoomsQuery(
        limit=query_int(request, "limit"),
        since=request.query_params.get("since"),
        include_all_networks=query_bool(request, "include_all_networks"),
        third_party_instance_id=request.query_params.get("third_party_instance_id"),
    )
    return await _serve(request, query)


async def serve_post(request: Request) -> Response:
    _, content = await authenticate(request)
    _check_allowed(request)
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise MatrixError(400, "M_NOT_JSON", "Content must be a JSON object")
    return await _serve(request, parse(PublicRoomsQuery, content))


# Querying


def _clean_response(body: Any, server: str) -> dict[str, Any]:
    """The parts of a remote answer a client may rely on, shaped as the spec says."""
    if not isinstance(body, dict) or not isinstance(body.get("chunk"), list):
        raise MatrixError(502, "M_UNKNOWN", f"Bad public rooms response from {server}")
    chunk = [
        room
        for room in body["chunk"][:MAX_REMOTE_ROOMS]
        if isinstance(room, dict)
        and isinstance(room.get("room_id"), str)
        and isinstance(room.get("num_joined_members"), int)
        and isinstance(room.get("world_readable"), bool)
        and isinstance(room.get("guest_can_join"), bool)
    ]
    result: dict[str, Any] = {"chunk": chunk}
    for key in ("next_batch", "prev_batch"):
        if isinstance(body.get(key), str):
            result[key] = body[key]
    if isinstance(body.get("total_room_count_estimate"), int):
        result["total_room_count_estimate"] = body["total_room_count_estimate"]
    return result


def _matches(room: dict[str, Any], term: str) -> bool:
    needle = term.lower()
    return any(needle in str(room.get(k, "")).lower() for k in ("name", "topic", "canonical_alias", "room_id"))


class RemotePublicRooms:
    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def query(
        self,
        server: str,
        *,
        limit: int | None,
        since: str | None,
        search: str | None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
    ) -> dict[str, Any]:
        """Another server's public rooms, for one of our clients."""
        if not valid_server_name(server):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")
        if limit is not None and limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        try:
            if search:
                body = await self._post(server, limit, since, search, include_all_networks, third_party_instance_id)
            else:
                body = await self._get(server, limit, since, include_all_networks, third_party_instance_id)
        except FederationError as exc:
            logger.info("publicRooms of %s failed: %s", server, exc)
            if exc.status == 403:
                raise MatrixError(403, "M_FORBIDDEN", f"{server} does not share its public rooms") from None
            if exc.status in (400, 404):
                raise MatrixError(exc.status, "M_NOT_FOUND" if exc.status == 404 else "M_INVALID_PARAM",
                                  f"{server} refused the query") from None
            raise MatrixError(502, "M_UNKNOWN", f"Could not reach {server}") from None
        return _clean_response(body, server)

    async def _get(
        self, server: str, limit: int | None, since: str | None, all_networks: bool, instance: str | None
    ) -> Any:
        query: dict[str, Any] = {}
        if limit:
            query["limit"] = limit
        if since is not None:
            query["since"] = since
        if all_networks:
            query["include_all_networks"] = "true"
        if instance is not None:
            query["third_party_instance_id"] = instance
        return await self.client.request("GET", server, PATH, query=query, timeout=REMOTE_TIMEOUT_S)

    async def _post(
        self, server: str, limit: int | None, since: str | None, search: str, all_networks: bool, instance: str | None
    ) -> Any:
        content: dict[str, Any] = {"filter": {"generic_search_term": search}, "include_all_networks": all_networks}
        if limit:
            content["limit"] = limit
        if since is not None:
            content["since"] = since
        if instance is not None:
            content["third_party_instance_id"] = instance
        try:
            return await self.client.request("POST", server, PATH, content=content, timeout=REMOTE_TIMEOUT_S)
        except FederationError as exc:
            # Servers without the POST form: list everything and search here (one page).
            if exc.status not in (404, 405):
                raise
        body = await self._get(server, None, None, all_networks, instance)
        if isinstance(body, dict) and isinstance(body.get("chunk"), list):
            chunk = [r for r in body["chunk"] if isinstance(r, dict) and _matches(r, search)]
            body = {"chunk": chunk[:limit] if limit else chunk, "total_room_count_estimate": len(chunk)}
        return body
