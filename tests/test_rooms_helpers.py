"""Helpers shared by the tests/test_rooms_*.py files (no tests here).

Raw HTTP through tests.conftest.Api, so every exchange is checked against the spec,
and direct database access to a test server through the project's own stores.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from storage.database import Database
from storage.events import EventStore
from storage.state import StateStore
from tests.conftest import V3, User
from tests.server import ServerProcess

V1 = "/_matrix/client/v1"


def q(value: str) -> str:
    """Percent-encode one path segment (room IDs, aliases, event IDs)."""
    return quote(value, safe="")


def create_room(user: User, **body: Any) -> str:
    response = user.api.post(f"{V3}/createRoom", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["room_id"])


def send(
    user: User,
    room_id: str,
    content: dict[str, Any] | None = None,
    event_type: str = "m.room.message",
    txn: str | None = None,
) -> str:
    if content is None:
        content = {"msgtype": "m.text", "body": "hello"}
    response = user.api.put(
        f"{V3}/rooms/{q(room_id)}/send/{q(event_type)}/{txn or secrets.token_hex(8)}", json=content
    )
    assert response.status_code == 200, response.text
    return str(response.json()["event_id"])


def text(user: User, room_id: str, body: str) -> str:
    return send(user, room_id, {"msgtype": "m.text", "body": body})


def put_state(user: User, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
    response = user.api.put(f"{V3}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", json=content)
    assert response.status_code == 200, response.text
    return str(response.json()["event_id"])


def invite(inviter: User, room_id: str, invitee: User | str) -> httpx.Response:
    user_id = invitee if isinstance(invitee, str) else invitee.user_id
    response = inviter.api.post(f"{V3}/rooms/{q(room_id)}/invite", json={"user_id": user_id})
    if response.status_code == 200:
        assert response.json() == {}
    return response


def invite_ok(inviter: User, room_id: str, invitee: User) -> None:
    response = invite(inviter, room_id, invitee)
    assert response.status_code == 200, response.text


def join(user: User, room_id: str) -> None:
    response = user.api.post(f"{V3}/rooms/{q(room_id)}/join", json={})
    assert response.status_code == 200, response.text


def leave(user: User, room_id: str) -> None:
    response = user.api.post(f"{V3}/rooms/{q(room_id)}/leave", json={})
    assert response.status_code == 200, response.text


def all_messages(user: User, room_id: str, direction: str = "f", limit: int = 50, **params: Any) -> list[dict[str, Any]]:
    """Every event /messages serves the user, paging to the end."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(1000):
        query = {"dir": direction, "limit": limit, **params, **({"from": token} if token else {})}
        response = user.api.get(f"{V3}/rooms/{q(room_id)}/messages", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["chunk"])
        if "end" not in page:
            return events
        token = page["end"]
    raise AssertionError("pagination did not end")


def message_bodies(user: User, room_id: str) -> list[str]:
    return [e["content"]["body"] for e in all_messages(user, room_id) if e["type"] == "m.room.message" and "body" in e["content"]]


def expect_error(response: httpx.Response, status: int, errcode: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body.get("errcode"), str) and isinstance(body.get("error"), str), body
    if errcode is not None:
        assert body["errcode"] == errcode, body
    return dict(body)


def state_of(user: User, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    response = user.api.get(f"{V3}/rooms/{q(room_id)}/state")
    assert response.status_code == 200, response.text
    return {(e["type"], e["state_key"]): e for e in response.json()}


def assert_no_server_errors(server: ServerProcess) -> None:
    log = server.log()
    assert "Unhandled error" not in log, log[log.find("Unhandled error") - 200 :][:4000]


# --- the server's database and key -------------------------------------------------


def database_url(server: ServerProcess) -> str:
    url = (server.config.get("database") or {}).get("url")
    if url:
        return str(url)
    return f"sqlite+aiosqlite:///{Path(server.config['data_directory']) / 'homeserver.db'}"


@asynccontextmanager
async def open_event_store(server: ServerProcess) -> AsyncIterator[EventStore]:
    db = Database.open(database_url(server))
    try:
        yield EventStore(db, StateStore(db))
    finally:
        await db.close()


def server_verify_keys(server: ServerProcess) -> dict[str, Any]:
    """key ID -> verify key, read from the server's signing.key file."""
    from signedjson.key import get_verify_key, read_signing_keys

    path = Path(server.config["data_directory"]) / "signing.key"
    with path.open() as stream:
        keys = read_signing_keys(stream)
    return {f"{k.alg}:{k.version}": get_verify_key(k) for k in keys}

