"""End-to-end encryption with a real client stack: two matrix-nio clients with
encryption enabled (vodozemac) exchange encrypted messages in an encrypted room, and
a long-poll sync wakes when the other user sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.crypto import ENCRYPTION_ENABLED

from tests.conftest import User
from tests.server import ServerProcess

pytestmark = pytest.mark.skipif(not ENCRYPTION_ENABLED, reason="matrix-nio without its e2e extra")

ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


async def encrypted_client(server: ServerProcess, user: User, store: Path) -> AsyncClient:
    store.mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(server.base_url, user.user_id, device_id=user.device_id, store_path=str(store), config=config)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    return client


async def settle(client: AsyncClient) -> SyncResponse:
    """One sync plus the key maintenance a real client does after it."""
    response = await client.sync(timeout=0, full_state=client.next_batch is None)
    assert isinstance(response, SyncResponse), response
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    return response


@pytest.fixture
async def pair(
    server: ServerProcess, new_user: Callable[..., User], tmp_path: Path
) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    alice = await encrypted_client(server, new_user(), tmp_path / "alice")
    bob = await encrypted_client(server, new_user(), tmp_path / "bob")
    yield alice, bob
    await alice.close()
    await bob.close()


async def test_encrypted_conversation(pair: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = pair
    await settle(alice)
    await settle(bob)
    created = await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION_STATE])
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await settle(bob)
    assert isinstance(await bob.join(room_id), JoinResponse)
    for client in (alice, bob, alice):
        await settle(client)
    assert alice.rooms[room_id].encrypted
    assert bob.device_id in alice.device_store[bob.user_id]

    sent = await alice.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "secret hello"}, ignore_unverified_devices=True
    )
    assert isinstance(sent, RoomSendResponse), sent
    # On the wire the event is encrypted; nio decrypts it with the room key that came
    # by to-device message.
    plaintext = await _await_text(bob, room_id, "secret hello")
    assert plaintext.sender == alice.user_id and plaintext.decrypted

    reply = await bob.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "secret reply"}, ignore_unverified_devices=True
    )
    assert isinstance(reply, RoomSendResponse), reply
    answer = await _await_text(alice, room_id, "secret reply")
    assert answer.sender == bob.user_id and answer.decrypted


async def _await_text(client: AsyncClient, room_id: str, body: str) -> RoomMessageText:
    undecryptable: list[MegolmEvent] = []
    for _ in range(10):
        response = await settle(client)
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, RoomMessageText) and event.body == body:
                return event
            if isinstance(event, MegolmEvent):
                undecryptable.append(event)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{body!r} never arrived in plaintext (undecryptable: {undecryptable})")


async def test_long_poll_wakes_when_the_other_user_sends(pair: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = pair
    created = await alice.room_create(invite=[bob.user_id])
    room_id = created.room_id
    await bob.join(room_id)
    await alice.sync(timeout=0)
    await bob.sync(timeout=0)
    waiting = asyncio.create_task(bob.sync(timeout=30_000))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "ping"})
    # Well before the 30 s timeout.
    response = await asyncio.wait_for(waiting, 10)
    assert isinstance(response, SyncResponse)
    events = response.rooms.join[room_id].timeline.events
    assert [e.body for e in events if isinstance(e, RoomMessageText)] == ["ping"]
