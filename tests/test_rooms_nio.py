"""Rooms through a real client: two matrix-nio users in a direct chat and a group chat."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    RedactedEvent,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomRedactResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
)

from tests.conftest import V3, User, register_user
from tests.server import POSTGRES_ENV, ServerProcess


async def nio_client(server: ServerProcess, user: User) -> AsyncClient:
    client = AsyncClient(server.base_url, user.user_id)
    client.access_token = user.access_token
    client.user_id = user.user_id
    client.device_id = user.device_id
    return client


@pytest.fixture
async def alice(server: ServerProcess, new_user) -> AsyncIterator[AsyncClient]:  # type: ignore[no-untyped-def]
    client = await nio_client(server, new_user())
    yield client
    await client.close()


@pytest.fixture
async def bob(server: ServerProcess, new_user) -> AsyncIterator[AsyncClient]:  # type: ignore[no-untyped-def]
    client = await nio_client(server, new_user())
    yield client
    await client.close()


async def send_text(client: AsyncClient, room_id: str, body: str) -> str:
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(response, RoomSendResponse), response
    return response.event_id


async def history(client: AsyncClient, room_id: str, limit: int = 100) -> list[object]:
    response = await client.room_messages(room_id, start="", limit=limit)
    assert isinstance(response, RoomMessagesResponse), response
    return list(reversed(response.chunk))


async def test_direct_chat(alice: AsyncClient, bob: AsyncClient) -> None:
    created = await alice.room_create(is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat)
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    joined = await bob.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    await send_text(alice, room_id, "hello bob")
    await send_text(bob, room_id, "hi alice")
    bodies = [getattr(e, "body", None) for e in await history(alice, room_id) if hasattr(e, "body")]
    assert bodies == ["hello bob", "hi alice"]
    invite = [e for e in await history(bob, room_id) if getattr(e, "membership", None) == "invite"]
    assert invite and invite[0].content.get("is_direct") is True


async def test_group_chat_lifecycle(alice: AsyncClient, bob: AsyncClient, new_user, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    carol_user = new_user()
    carol = await nio_client(server, carol_user)
    try:
        created = await alice.room_create(name="Team", topic="Planning", visibility=RoomVisibility.private)
        room_id = created.room_id
        for guest in (bob, carol):
            await alice.room_invite(room_id, guest.user_id)
            assert isinstance(await guest.join(room_id), JoinResponse)
        await send_text(bob, room_id, "bob here")
        await alice.room_put_state(room_id, "m.room.name", {"name": "Team 2"})
        await alice.room_put_state(room_id, "m.room.topic", {"topic": "Shipping"})
        state = await alice.room_get_state_event(room_id, "m.room.name")
        assert state.content == {"name": "Team 2"}
        # Bob has no power to rename the room.
        denied = await bob.room_put_state(room_id, "m.room.name", {"name": "Bob's room"})
        assert getattr(denied, "status_code", None) == "M_FORBIDDEN"

        await alice.room_kick(room_id, carol.user_id, reason="bye")
        kicked = await send_text_expect_error(carol, room_id)
        assert kicked == "M_FORBIDDEN"
        await alice.room_ban(room_id, bob.user_id, reason="spam")
        assert (await bob.join(room_id)).status_code == "M_FORBIDDEN"
        await alice.room_unban(room_id, bob.user_id)
        await alice.room_invite(room_id, bob.user_id)
        assert isinstance(await bob.join(room_id), JoinResponse)
        await bob.room_leave(room_id)
        members = await alice.joined_members(room_id)
        assert [m.user_id for m in members.members] == [alice.user_id]
        events = await history(alice, room_id)
        memberships = [(e.state_key, e.membership) for e in events if hasattr(e, "membership")]
        assert (carol.user_id, "leave") in memberships and (bob.user_id, "ban") in memberships
    finally:
        await carol.close()


async def send_text_expect_error(client: AsyncClient, room_id: str) -> str | None:
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
    return getattr(response, "status_code", None)


async def test_paginate_500_events_each_once_in_order(alice: AsyncClient) -> None:
    room_id = (await alice.room_create(name="Long")).room_id
    sent = [await send_text(alice, room_id, f"message {i}") for i in range(500)]
    seen: list[str] = []
    token = ""
    while True:
        page = await alice.room_messages(room_id, start=token, limit=37)
        assert isinstance(page, RoomMessagesResponse), page
        seen.extend(e.event_id for e in page.chunk if getattr(e, "body", "").startswith("message"))
        if not page.end or not page.chunk:
            break
        token = page.end
    assert list(reversed(seen)) == sent


async def test_paginate_forwards_over_http(user: User) -> None:
    room_id = user.api.post(f"{V3}/createRoom", json={}).json()["room_id"]
    sent = [
        user.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/f{i}", json={"msgtype": "m.text", "body": str(i)}).json()["event_id"]
        for i in range(60)
    ]
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"dir": "f", "limit": 25, **({"from": token} if token else {})}
        page = user.api.get(f"{V3}/rooms/{room_id}/messages", params=params).json()
        seen.extend(e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message")
        if "end" not in page:
            break
        token = page["end"]
    assert seen == sent


async def test_a_deactivated_account_leaves_its_rooms(bob: AsyncClient, new_user) -> None:  # type: ignore[no-untyped-def]
    """Deactivating your own account takes you out of your rooms and rejects your
    invites, as an operator's deactivation does: the other members' clients see you go."""
    leaving: User = new_user()
    shared = await bob.room_create(name="Stays", visibility=RoomVisibility.private)
    invited = await bob.room_create(name="Never joined", visibility=RoomVisibility.private)
    for room_id in (shared.room_id, invited.room_id):
        await bob.room_invite(room_id, leaving.user_id)
    assert leaving.api.post(f"{V3}/join/{quote(shared.room_id)}", json={}).status_code == 200
    await bob.sync(timeout=0, full_state=True)
    assert leaving.user_id in bob.rooms[shared.room_id].users
    assert leaving.user_id in bob.rooms[invited.room_id].invited_users

    challenge = leaving.api.post(f"{V3}/account/deactivate", json={})
    auth = {"type": "m.login.password", "session": challenge.json()["session"], "user": leaving.localpart}
    done = leaving.api.post(f"{V3}/account/deactivate", json={"auth": {**auth, "password": leaving.password}})
    assert done.status_code == 200, done.text

    await bob.sync(timeout=0)
    assert leaving.user_id not in bob.rooms[shared.room_id].users
    assert leaving.user_id not in bob.rooms[invited.room_id].invited_users
    for room_id in (shared.room_id, invited.room_id):
        state = await bob.room_get_state_event(room_id, "m.room.member", leaving.user_id)
        assert isinstance(state, RoomGetStateEventResponse), state
        assert state.content["membership"] == "leave"


async def test_a_two_event_cache_serves_everything_from_the_database(make_server) -> None:  # type: ignore[no-untyped-def]
    """With `database.event_cache_size: 2` nearly every event a client asks for has
    left the memory cache: history, a redaction of an older message and another
    member's first sync must come from the database just as they come from memory."""
    small = make_server({"database": {"event_cache_size": 2}})
    writer = await nio_client(small, register_user(small.base_url))
    reader = await nio_client(small, register_user(small.base_url))
    try:
        created = await writer.room_create(name="Small cache", invite=[reader.user_id])
        assert isinstance(created, RoomCreateResponse), created
        assert isinstance(await reader.join(created.room_id), JoinResponse)
        sent = [await send_text(writer, created.room_id, f"message {i}") for i in range(8)]
        redacted = await writer.room_redact(created.room_id, sent[1], reason="typo")
        assert isinstance(redacted, RoomRedactResponse), redacted

        events = await history(reader, created.room_id)
        messages = [e for e in events if isinstance(e, (RoomMessageText, RedactedEvent))]
        assert [e.event_id for e in messages] == sent
        assert isinstance(messages[1], RedactedEvent) and messages[1].reason == "typo"
        assert [e.body for e in messages if isinstance(e, RoomMessageText)] == [
            f"message {i}" for i in range(8) if i != 1
        ]

        synced = await reader.sync(timeout=0, full_state=True)
        assert isinstance(synced, SyncResponse), synced
        room = reader.rooms[created.room_id]
        assert room.name == "Small cache" and writer.user_id in room.users
        timeline = synced.rooms.join[created.room_id].timeline.events
        assert timeline[-1].event_id == redacted.event_id
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.skipif(bool(os.environ.get(POSTGRES_ENV)), reason="edits the SQLite file")
def test_event_cache_size_bounds_the_events_kept_in_memory(make_server) -> None:  # type: ignore[no-untyped-def]
    """An event read once stays in memory only while it is among the newest
    `event_cache_size` read: after three more reads a cache of 2 has let it go, and its
    row (changed here behind the server's back) is read again; a cache of 10,000 still
    answers from memory."""
    for size, expected in ((2, "m0 on disk"), (10_000, "m0")):
        server = make_server({"database": {"event_cache_size": size}})
        user = register_user(server.base_url)
        room = quote(user.api.post(f"{V3}/createRoom", json={}).json()["room_id"])
        sent = [
            user.api.put(f"{V3}/rooms/{room}/send/m.room.message/t{i}", json={"msgtype": "m.text", "body": f"m{i}"})
            for i in range(4)
        ]
        ids = [response.json()["event_id"] for response in sent]
        assert [_body(user, room, event_id) for event_id in ids] == ["m0", "m1", "m2", "m3"]
        conn = sqlite3.connect(server.directory / "data" / "homeserver.db")
        with conn:
            conn.execute("UPDATE events SET json = replace(json, '\"m0\"', '\"m0 on disk\"') WHERE event_id = ?", (ids[0],))
        conn.close()
        assert _body(user, room, ids[0]) == expected, size


def _body(user: User, room: str, event_id: str) -> str:
    response = user.api.get(f"{V3}/rooms/{room}/event/{quote(event_id)}")
    assert response.status_code == 200, response.text
    return str(response.json()["content"]["body"])
