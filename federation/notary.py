"""This server as a notary: GET /_matrix/key/v2/query/{serverName} and POST
/_matrix/key/v2/query (spec: Server-Server API, "Querying Keys Through Another Server").

A notary hands out other servers' key responses exactly as the origin signed them,
adding its own signature, so a server that cannot reach the origin (or wants a second
opinion) can still check it. Responses are kept in memory, in the origin's signed
form; one is fetched again when it does not stay valid until the asker's
`minimum_valid_until_ts` or lacks a key ID the asker wants. An origin that cannot be
reached is answered from the cache even if stale (the asker sees `valid_until_ts`
and decides), or left out. Our own keys come fresh from our signing key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from federation.client import FederationClient, FederationError
from federation.key_fetcher import KeyFetchError, parse_key_response
from federation.keys import server_keys_response
from federation.media import valid_server_name
from homeserver.errors import MatrixError
from homeserver.events import sign_json
from homeserver.http import Body, json_response, parse, query_int, read_json

logger = logging.getLogger(__name__)

# Servers per POST: each may cost an outbound fetch, so one request cannot fan out
# without bound.
MAX_SERVERS_PER_QUERY = 100
# Remembered origins; the oldest is forgotten past this.
MAX_CACHED_SERVERS = 10_000
# A key response is a few hundred bytes; anything much larger is not one.
MAX_KEY_RESPONSE_BYTES = 64 * 1024
FETCH_TIMEOUT_S = 15
# An origin is fetched again at most this often, whatever askers want (a far-future
# minimum_valid_until_ts or an unknown key ID must not make us hammer it).
REFETCH_AFTER_S = 5.0


class KeyCriteria(Body):
    minimum_valid_until_ts: int | None = None


class KeyQuery(Body):
    server_keys: dict[str, dict[str, KeyCriteria]]


class Wanted(msgspec.Struct):
    """What one asker needs of one server's keys."""

    key_ids: set[str] = msgspec.field(default_factory=set)
    minimum_valid_until_ts: int | None = None


def _key_ids(response: dict[str, Any]) -> set[str]:
    ids: set[str] = set()
    for section in ("verify_keys", "old_verify_keys"):
        value = response.get(section)
        if isinstance(value, dict):
            ids.update(value)
    return ids


class Notary:
    def __init__(self, hs: Any, client: FederationClient) -> None:
        self.hs = hs
        self.client = client
        # server name -> the origin's signed /_matrix/key/v2/server response.
        self._responses: dict[str, dict[str, Any]] = {}
        self._fetched_at: dict[str, float] = {}
        self._fetching: dict[str, asyncio.Task[dict[str, Any] | None]] = {}

    async def query(self, wanted: dict[str, Wanted]) -> list[dict[str, Any]]:
        """Key responses for the servers asked about, each countersigned by us."""
        found = await asyncio.gather(*(self._response_for(server, w) for server, w in wanted.items()))
        name, key = self.hs.server_name, self.hs.signing_key
        return [sign_json(response, name, key) for response in found if response is not None]

    async def _response_for(self, server: str, wanted: Wanted) -> dict[str, Any] | None:
        now = int(time.time() * 1000)
        if server == self.hs.server_name:
            return server_keys_response(server, self.hs.signing_key, now)
        cached = self._responses.get(server)
        minimum = wanted.minimum_valid_until_ts if wanted.minimum_valid_until_ts is not None else now
        if cached is not None and (
            (cached["valid_until_ts"] >= minimum and wanted.key_ids <= _key_ids(cached))
            or time.monotonic() - self._fetched_at.get(server, 0.0) < REFETCH_AFTER_S
        ):
            return cached
        fresh = await self._fetch(server)
        return fresh if fresh is not None else cached

    async def _fetch(self, server: str) -> dict[str, Any] | None:
        # One fetch per origin at a time, however many askers wait on it.
        task = self._fetching.get(server)
        if task is None:
            task = asyncio.create_task(self._download(server))
            self._fetching[server] = task
            task.add_done_callback(lambda _: self._fetching.pop(server, None))
        return await task

    async def _download(self, server: str) -> dict[str, Any] | None:
        if server in self._responses:  # (kept only for servers we remember)
            self._fetched_at[server] = time.monotonic()
        try:
            body = await self.client.request(
                "GET", server, "/_matrix/key/v2/server", signed=False, timeout=FETCH_TIMEOUT_S
            )
            if len(json.dumps(body)) > MAX_KEY_RESPONSE_BYTES:
                raise KeyFetchError("key response too large")
            # Only a response that names the server and is signed by every key it
            # lists is passed on: we vouch for it with our signature.
            parse_key_response(server, body, int(time.time() * 1000))
        except (FederationError, KeyFetchError) as exc:
            logger.info("Notary: no keys from %s: %s", server, exc)
            return None
        except Exception:  # an origin's answer is untrusted input: never our 500
            logger.warning("Notary: unusable key response from %s", server, exc_info=True)
            return None
        # Keep only what the origin signed (and its signatures): nothing unsigned of
        # theirs goes out under our signature.
        response = {k: v for k, v in body.items() if k != "unsigned"}
        response["signatures"] = {server: body["signatures"][server]}
        self._responses.pop(server, None)
        self._responses[server] = response
        self._fetched_at[server] = time.monotonic()
        while len(self._responses) > MAX_CACHED_SERVERS:
            oldest = next(iter(self._responses))
            self._responses.pop(oldest)
            self._fetched_at.pop(oldest, None)
        return response


# Handlers


async def query_one(request: Request) -> Response:
    server = request.path_params["server_name"]
    if not valid_server_name(server):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")
    minimum = query_int(request, "minimum_valid_until_ts")
    notary: Notary = request.app.state.federation.notary
    return json_response({"server_keys": await notary.query({server: Wanted(minimum_valid_until_ts=minimum)})})


async def query_many(request: Request) -> Response:
    body = parse(KeyQuery, await read_json(request))
    if len(body.server_keys) > MAX_SERVERS_PER_QUERY:
        raise MatrixError(400, "M_BAD_JSON", f"At most {MAX_SERVERS_PER_QUERY} servers per query")
    wanted: dict[str, Wanted] = {}
    for server, keys in body.server_keys.items():
        if not valid_server_name(server):
            raise MatrixError(400, "M_BAD_JSON", f"Invalid server name in server_keys: {server[:100]!r}")
        minimums = [c.minimum_valid_until_ts for c in keys.values() if c.minimum_valid_until_ts is not None]
        wanted[server] = Wanted(set(keys), max(minimums) if minimums else None)
    notary: Notary = request.app.state.federation.notary
    return json_response({"server_keys": await notary.query(wanted)})
