"""Other servers' signing keys, fetched from them directly and cached until their
`valid_until_ts` (spec: Server-Server API, "Retrieving server keys").

A key response is accepted only if it names the server we asked and is signed by
every key it lists, so a man in the middle cannot slip in a key of its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from signedjson.types import VerifyKey

from federation.client import FederationClient, FederationError
from homeserver.events import SignatureError, decode_verify_key, verify_json

# Cache a key for at least this long even if the server says less, and at most
# this long, so a restart of a peer with a new key is picked up within a week.
MIN_CACHE_MS = 5 * 60 * 1000
MAX_CACHE_MS = 7 * 24 * 60 * 60 * 1000


class CachedKey(msgspec.Struct, frozen=True):
    key: VerifyKey
    valid_until_ts: int
    expired_ts: int | None = None  # set for old_verify_keys


class KeyFetchError(Exception):
    pass


def parse_key_response(server_name: str, body: Any, now_ms: int) -> dict[str, CachedKey]:
    """The keys of a /_matrix/key/v2/server response, after checking it."""
    if not isinstance(body, dict) or body.get("server_name") != server_name:
        raise KeyFetchError(f"key response is not for {server_name}")
    verify_keys = body.get("verify_keys")
    valid_until = body.get("valid_until_ts")
    if not isinstance(verify_keys, dict) or not verify_keys or not isinstance(valid_until, int):
        raise KeyFetchError("malformed key response")
    keys: dict[str, CachedKey] = {}
    for key_id, value in verify_keys.items():
        if not isinstance(value, dict) or not isinstance(value.get("key"), str) or not key_id.startswith("ed25519:"):
            continue
        try:
            keys[key_id] = CachedKey(decode_verify_key(key_id, value["key"]), valid_until)
        except Exception:
            raise KeyFetchError(f"undecodable key {key_id}") from None
    for key_id, cached in keys.items():
        try:
            verify_json(body, server_name, {key_id: cached.key})
        except SignatureError as exc:
            raise KeyFetchError(f"key response not self-signed by {key_id}: {exc}") from None
    old = body.get("old_verify_keys")
    if isinstance(old, dict):
        for key_id, value in old.items():
            if isinstance(value, dict) and isinstance(value.get("key"), str) and isinstance(value.get("expired_ts"), int):
                try:
                    keys.setdefault(
                        key_id, CachedKey(decode_verify_key(key_id, value["key"]), value["expired_ts"], value["expired_ts"])
                    )
                except Exception:
                    continue
    return keys


class KeyFetcher:
    def __init__(self, client: FederationClient) -> None:
        self.client = client
        self._keys: dict[str, dict[str, CachedKey]] = {}
        self._fetching: dict[str, asyncio.Task[dict[str, CachedKey]]] = {}

    async def verify_key(self, server_name: str, key_id: str, at_ms: int | None = None) -> VerifyKey:
        """The key `key_id` of `server_name`, valid at `at_ms` (default: now)."""
        now = int(time.time() * 1000)
        moment = at_ms if at_ms is not None else now
        cached = self._keys.get(server_name, {}).get(key_id)
        if cached is None or cached.valid_until_ts < now:
            keys = await self._fetch(server_name)
            cached = keys.get(key_id)
        if cached is None:
            raise KeyFetchError(f"{server_name} has no key {key_id}")
        if cached.expired_ts is not None and cached.expired_ts < moment:
            raise KeyFetchError(f"key {key_id} of {server_name} had expired")
        return cached.key

    async def _fetch(self, server_name: str) -> dict[str, CachedKey]:
        # One fetch per server at a time, however many requests are waiting on it.
        task = self._fetching.get(server_name)
        if task is None:
            task = asyncio.create_task(self._download(server_name))
            self._fetching[server_name] = task
            task.add_done_callback(lambda _: self._fetching.pop(server_name, None))
        return await task

    async def _download(self, server_name: str) -> dict[str, CachedKey]:
        try:
            body = await self.client.request("GET", server_name, "/_matrix/key/v2/server", signed=False, timeout=15)
        except FederationError as exc:
            raise KeyFetchError(f"could not fetch keys of {server_name}: {exc}") from None
        now = int(time.time() * 1000)
        keys = parse_key_response(server_name, body, now)
        for key_id, cached in list(keys.items()):
            if cached.expired_ts is None:
                until = min(max(cached.valid_until_ts, now + MIN_CACHE_MS), now + MAX_CACHE_MS)
                keys[key_id] = CachedKey(cached.key, until)
        self._keys[server_name] = {**self._keys.get(server_name, {}), **keys}
        return self._keys[server_name]

    def known_keys(self, server_name: str) -> dict[str, CachedKey]:
        return dict(self._keys.get(server_name, {}))
