"""A small Matrix Client-Server API client for the benchmarks: aiohttp, one shared
connection pool, JSON in and out, and patience with 429 (Synapse may still rate-limit
an action the config does not name).

Long-polls that must not cost the bench process much per connection (the idle
long-poll capacity workload holds 10,000 of them) use `RawLongPoll`, a bare asyncio
protocol that writes one GET and notes when the first byte of the answer arrives."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

V3 = "/_matrix/client/v3"


_nonce = itertools.count()


def unique_filter(sync_filter: dict[str, Any] | None = None) -> str:
    """An inline /sync filter that no other request of the run uses. Synapse answers a
    repeated identical /sync (same user, since, filter, timeout...) from a response
    cache for two minutes (`caches.sync_response_cache_duration`); the bench must time
    the work, not the cache, so each request excludes an account data type of its own
    (one that never exists: the response is what it would be without it)."""
    out = dict(sync_filter or {})
    account_data = dict(out.get("account_data") or {})
    account_data["not_types"] = [*account_data.get("not_types", []), f"bench.nonce.{next(_nonce)}"]
    out["account_data"] = account_data
    return json.dumps(out, separators=(",", ":"))


class RequestFailed(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} -> {status} {str(body)[:300]}")
        self.status = status
        self.body = body


@dataclass
class User:
    user_id: str
    access_token: str
    device_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Client:
    """All requests of one workload against one server go through one of these."""

    def __init__(self, base_url: str, *, limit: int = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self._limit = limit
        self.session: aiohttp.ClientSession | None = None
        self.retried_429 = 0

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=None),
            json_serialize=json.dumps,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        user: User | None = None,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        assert self.session is not None
        headers = user.headers if user else {}
        for _attempt in range(50):
            async with self.session.request(
                method, self.base_url + path, headers=headers, json=body, params=params
            ) as response:
                data = await response.read()
                status = response.status
            parsed = json.loads(data) if data else None
            if status == 429:
                self.retried_429 += 1
                wait_ms = (parsed or {}).get("retry_after_ms", 200)
                await asyncio.sleep(min(wait_ms, 5000) / 1000)
                continue
            if status not in ok:
                raise RequestFailed(method, path, status, parsed)
            return parsed
        raise RequestFailed(method, path, 429, "still rate limited after 50 attempts")

    # --- the calls the workloads use -----------------------------------------------

    async def register(self, localpart: str | None = None) -> User:
        localpart = localpart or "bench_" + secrets.token_hex(5)
        body: dict[str, Any] = {
            "username": localpart,
            "password": "bench-" + secrets.token_hex(8),
            "initial_device_display_name": "bench",
        }
        first = await self.request("POST", f"{V3}/register", body=body, ok=(200, 401))
        if "access_token" not in first:
            body["auth"] = {"type": "m.login.dummy", "session": first.get("session")}
            first = await self.request("POST", f"{V3}/register", body=body)
        return User(first["user_id"], first["access_token"], first.get("device_id", ""))

    async def register_many(self, count: int, parallel: int = 10) -> list[User]:
        users: list[User] = []
        for start in range(0, count, parallel):
            users.extend(await asyncio.gather(*(self.register() for _ in range(start, min(count, start + parallel)))))
        return users

    async def create_room(self, user: User, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        result = await self.request("POST", f"{V3}/createRoom", user, body=body)
        return str(result["room_id"])

    async def join(self, user: User, room_id: str) -> None:
        await self.request("POST", f"{V3}/join/{quote(room_id)}", user, body={})

    async def send(self, user: User, room_id: str, content: dict[str, Any], txn_id: str | None = None) -> str:
        txn_id = txn_id or secrets.token_hex(8)
        result = await self.request(
            "PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{txn_id}", user, body=content
        )
        return str(result["event_id"])

    async def sync(
        self,
        user: User,
        since: str | None = None,
        timeout_ms: int = 0,
        sync_filter: dict[str, Any] | str | None = None,
    ) -> Any:
        """`sync_filter`: a filter ID (str) as is, else an inline filter made unique
        (`unique_filter`)."""
        params = {"timeout": str(timeout_ms), "set_presence": "offline"}
        params["filter"] = sync_filter if isinstance(sync_filter, str) else unique_filter(sync_filter)
        if since is not None:
            params["since"] = since
        return await self.request("GET", f"{V3}/sync", user, params=params)

    async def upload_filter(self, user: User, definition: dict[str, Any] | None = None, *, unique: bool = False) -> str:
        """POST /user/{userId}/filter; with `unique`, a filter no other request uses."""
        body = json.loads(unique_filter(definition)) if unique else (definition or {})
        result = await self.request("POST", f"{V3}/user/{quote(user.user_id)}/filter", user, body=body)
        return str(result["filter_id"])

    async def messages(self, user: User, room_id: str, from_token: str | None, limit: int = 100) -> Any:
        params = {"dir": "b", "limit": str(limit)}
        if from_token is not None:
            params["from"] = from_token
        return await self.request("GET", f"{V3}/rooms/{quote(room_id)}/messages", user, params=params)


async def fill_room(client: Client, members: list[User], room_ids: list[str]) -> None:
    """Join every member (but the creator, who is members[0]) to every room."""
    sem = asyncio.Semaphore(8)

    async def one(user: User, room_id: str) -> None:
        async with sem:
            await client.join(user, room_id)

    await asyncio.gather(*(one(u, r) for r in room_ids for u in members[1:]))


# --- raw long-polls -------------------------------------------------------------------


class RawLongPoll(asyncio.Protocol):
    """One GET /sync on its own connection; `woke` is the monotonic time the first
    byte of the response arrived, `status` its HTTP status once the head is in."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.woke: float | None = None
        self.status: int | None = None
        self.head = b""  # the start of the answer (at most 4 KiB), for reports
        self.lost = False
        self.answered = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.woke is None:
            self.woke = time.monotonic()
        if len(self.head) < 4096:
            self.head += data[: 4096 - len(self.head)]
        if self.status is None:
            if b"\r\n" in self.head:
                try:
                    self.status = int(self.head.split(b" ", 2)[1])
                except (IndexError, ValueError):
                    self.status = -1
                if not self.answered.done():
                    self.answered.set_result(self.woke)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.answered.done():
            self.answered.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def raw_sync_request(host: str, port: int, user: User, params: dict[str, str]) -> bytes:
    path = f"{V3}/sync?{urlencode(params)}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {user.access_token}\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    ).encode()
