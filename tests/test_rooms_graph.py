"""The event graph a room builds: concurrent sends, re-verifiable events, idempotent
transactions and state groups, checked over HTTP and in the server's database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from homeserver.events import check_content_hash, compute_event_id, get_room_version, verify_event_signature
from storage.schema import event_edges, events, room_forward_extremities, state_groups
from storage.state import MAX_DELTA_DEPTH
from tests.conftest import V3, User, register_user
from tests.server import ServerProcess
from tests.test_rooms_helpers import (
    all_messages,
    assert_no_server_errors,
    create_room,
    join,
    leave,
    open_event_store,
    put_state,
    q,
    send,
    server_verify_keys,
    text,
)


async def _db_room_events(server: ServerProcess, room_id: str) -> list[Any]:
    """Every accepted event of the room in stream order, from the database."""
    async with open_event_store(server) as store:
        return await store.room_events(room_id, backwards=False, limit=100_000)


async def _prev_edges(server: ServerProcess, room_id: str) -> dict[str, list[str]]:
    async with open_event_store(server) as store:
        async with store.db.read() as conn:
            rows = await conn.execute(
                select(event_edges.c.event_id, event_edges.c.prev_event_id)
                .join(events, events.c.event_id == event_edges.c.event_id)
                .where(events.c.room_id == room_id)
            )
            edges: dict[str, list[str]] = {}
            for row in rows:
                edges.setdefault(row.event_id, []).append(row.prev_event_id)
            return edges


async def _extremities(server: ServerProcess, room_id: str) -> list[str]:
    async with open_event_store(server) as store:
        async with store.db.read() as conn:
            rows = await conn.execute(
                select(room_forward_extremities.c.event_id).where(room_forward_extremities.c.room_id == room_id)
            )
            return [row.event_id for row in rows]


# --- 1. concurrency ------------------------------------------------------------------


async def test_100_concurrent_sends_form_a_linear_chain(server: ServerProcess, new_user: Callable[..., User]) -> None:
    owner = new_user()
    others = [new_user() for _ in range(3)]
    room_id = create_room(owner, preset="public_chat")
    for other in others:
        join(other, room_id)
    senders = [owner, *others]

    async def one(client: httpx.AsyncClient, user: User, i: int) -> tuple[str, str]:
        body = f"concurrent {i}"
        response = await client.put(
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/c{i}",
            json={"msgtype": "m.text", "body": body},
            headers={"Authorization": f"Bearer {user.access_token}"},
        )
        assert response.status_code == 200, response.text
        return body, response.json()["event_id"]

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
        results = await asyncio.gather(*(one(client, senders[i % 4], i) for i in range(100)))
    sent = dict(results)
    assert len(set(sent.values())) == 100

    # Through /messages: each event exactly once, in stream order.
    served = [e for e in all_messages(owner, room_id, limit=30) if e["type"] == "m.room.message"]
    assert sorted(e["event_id"] for e in served) == sorted(sent.values())
    assert len(served) == 100
    backwards = [e for e in all_messages(owner, room_id, direction="b", limit=17) if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in backwards] == [e["event_id"] for e in reversed(served)]
    for event in served:
        assert sent[event["content"]["body"]] == event["event_id"]

    # Through the database: one linear chain, each event's single prev_event the one
    # before it in stream order; one forward extremity.
    stored = await _db_room_events(server, room_id)
    ids = [e.event_id for e in stored]
    assert len(ids) == len(set(ids))
    assert set(sent.values()) <= set(ids)
    edges = await _prev_edges(server, room_id)
    for previous, event in zip(stored, stored[1:]):
        assert event.pdu["prev_events"] == [previous.event_id], event.event_id
        assert edges[event.event_id] == [previous.event_id]
        assert event.pdu["depth"] == previous.pdu["depth"] + 1
    assert stored[0].pdu["prev_events"] == []
    assert await _extremities(server, room_id) == [stored[-1].event_id]
    assert_no_server_errors(server)


async def test_concurrent_state_changes_and_sends_keep_state_consistent(
    server: ServerProcess, new_user: Callable[..., User]
) -> None:
    owner = new_user()
    room_id = create_room(owner)

    async def topic(client: httpx.AsyncClient, i: int) -> None:
        response = await client.put(
            f"{V3}/rooms/{q(room_id)}/state/m.room.topic/", json={"topic": f"topic {i}"},
            headers={"Authorization": f"Bearer {owner.access_token}"},
        )
        assert response.status_code == 200, response.text

    async def message(client: httpx.AsyncClient, i: int) -> None:
        response = await client.put(
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/m{i}", json={"msgtype": "m.text", "body": str(i)},
            headers={"Authorization": f"Bearer {owner.access_token}"},
        )
        assert response.status_code == 200, response.text

    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        await asyncio.gather(*(topic(client, i) for i in range(20)), *(message(client, i) for i in range(20)))
    stored = await _db_room_events(server, room_id)
    last_topic = [e for e in stored if e.type == "m.room.topic"][-1]
    current = owner.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.topic").json()
    assert current == last_topic.content
    for previous, event in zip(stored, stored[1:]):
        assert event.pdu["prev_events"] == [previous.event_id]


# --- 2. every stored event re-verifies -------------------------------------------------


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_every_stored_event_reverifies(
    version: str, server: ServerProcess, new_user: Callable[..., User]
) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(
        alice, room_version=version, name="Verify ✓", topic="Tópico 🎉", invite=[bob.user_id], preset="private_chat"
    )
    join(bob, room_id)
    messages = [
        text(alice, room_id, "plain"),
        text(bob, room_id, "ünïcödé \u2028 \U0001f600 \u0000 \\ \" 𝄞"),
        send(alice, room_id, {"nested": {"list": [1, -2, 9007199254740991, True, None, "x"], "empty": {}}}, "org.example.custom"),
        send(alice, room_id, {"body": "e\u0301 vs é", "msgtype": "m.notice"}),
    ]
    put_state(alice, room_id, "m.room.name", {"name": "名前"})
    put_state(alice, room_id, "org.example.state", {"k": "v"}, state_key="ключ")
    power = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels").json()
    power["users"] = {**power.get("users", {}), bob.user_id: 50}
    put_state(alice, room_id, "m.room.power_levels", power)
    redaction = alice.api.put(f"{V3}/rooms/{q(room_id)}/redact/{q(messages[0])}/r1", json={"reason": "oops ☂"})
    assert redaction.status_code == 200, redaction.text
    bob_own = alice.api.put(f"{V3}/rooms/{q(room_id)}/redact/{q(messages[1])}/r2", json={})
    assert bob_own.status_code == 200, bob_own.text
    leave(bob, room_id)

    room_version = get_room_version(version)
    keys = server_verify_keys(server)
    stored = await _db_room_events(server, room_id)
    assert len(stored) >= 15
    for event in stored:
        pdu = event.pdu
        assert check_content_hash(pdu), event.event_id
        verify_event_signature(room_version, pdu, server.server_name, keys)
        assert compute_event_id(room_version, pdu) == event.event_id
        assert "event_id" not in pdu
        if version == "12" and pdu["type"] == "m.room.create":
            assert "room_id" not in pdu
            assert room_id == "!" + event.event_id[1:]
        else:
            assert pdu["room_id"] == room_id
        if version in ("11", "12") and pdu["type"] == "m.room.redaction":
            assert "redacts" in pdu["content"] and "redacts" not in pdu
        if version == "10" and pdu["type"] == "m.room.redaction":
            assert "redacts" in pdu
    # The redacted events are still stored in full (redaction is applied when serving).
    by_id = {e.event_id: e for e in stored}
    assert by_id[messages[0]].redacted_by is not None
    assert by_id[messages[1]].content["body"].startswith("ünïcödé")


# --- 3. transaction IDs ------------------------------------------------------------


def test_txn_idempotent_per_device_and_across_restart(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    alice = register_user(server.base_url)
    room_id = create_room(alice)
    first = send(alice, room_id, {"msgtype": "m.text", "body": "once"}, txn="same-txn")
    again = send(alice, room_id, {"msgtype": "m.text", "body": "once"}, txn="same-txn")
    assert again == first

    # Another device of the same user with the same txnId: a new event.
    login = alice.api.post(
        f"{V3}/login",
        json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": alice.password},
    )
    assert login.status_code == 200, login.text
    other_device = User(alice.user_id, alice.password, login.json()["access_token"], login.json()["device_id"], alice.api)
    from tests.conftest import Api

    other_device.api = Api(server.base_url, other_device.access_token)
    other = send(other_device, room_id, {"msgtype": "m.text", "body": "once"}, txn="same-txn")
    assert other != first

    server.stop()
    server.start()
    after_restart = send(alice, room_id, {"msgtype": "m.text", "body": "once"}, txn="same-txn")
    assert after_restart == first
    # The transaction ID comes back to the sending device only.
    own = alice.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(first)}").json()
    assert own["unsigned"]["transaction_id"] == "same-txn"
    seen_by_other = other_device.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(first)}").json()
    assert "transaction_id" not in seen_by_other["unsigned"]
    bodies = [e["content"].get("body") for e in all_messages(alice, room_id) if e["type"] == "m.room.message"]
    assert bodies == ["once", "once"]
    # A restart keeps sending working on top of the stored graph.
    after = send(alice, room_id, {"msgtype": "m.text", "body": "after"}, txn="new-txn")
    assert after not in (first, other)
    assert_no_server_errors(server)


async def test_redact_txn_idempotent(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice = new_user()
    room_id = create_room(alice)
    target = text(alice, room_id, "to redact")
    first = alice.api.put(f"{V3}/rooms/{q(room_id)}/redact/{q(target)}/t1", json={})
    again = alice.api.put(f"{V3}/rooms/{q(room_id)}/redact/{q(target)}/t1", json={})
    assert first.status_code == again.status_code == 200
    assert first.json()["event_id"] == again.json()["event_id"]
    redaction = alice.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(first.json()['event_id'])}").json()
    assert redaction["unsigned"]["transaction_id"] == "t1"


# --- 12. state groups ----------------------------------------------------------------


async def test_many_state_changes_state_groups(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice = new_user()
    members = [new_user() for _ in range(5)]
    room_id = create_room(alice, preset="public_chat")
    topic_events: list[tuple[str, str]] = []
    joined_at: dict[str, str] = {}
    for i in range(120):
        topic_events.append((put_state(alice, room_id, "m.room.topic", {"topic": f"topic {i}"}), f"topic {i}"))
        if i % 24 == 10:
            member = members[i // 24]
            join(member, room_id)
            joined_at[member.user_id] = topic_events[-1][0]
        if i % 30 == 0:
            text(alice, room_id, f"message {i}")

    # /context gives the state at the last event it returns.
    for event_id, topic in topic_events[::7] + topic_events[-3:]:
        context = alice.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(event_id)}", params={"limit": 0}).json()
        state = {(e["type"], e["state_key"]): e for e in context["state"]}
        assert state[("m.room.topic", "")]["content"]["topic"] == topic
        assert state[("m.room.topic", "")]["event_id"] == event_id
        context = alice.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(event_id)}", params={"limit": 6}).json()
        state = {(e["type"], e["state_key"]): e for e in context["state"]}
        last = ([context["event"]] + context["events_after"])[-1]
        topics_returned = [e for e in [context["event"], *context["events_after"]] if e["type"] == "m.room.topic"]
        assert state[("m.room.topic", "")]["event_id"] == topics_returned[-1]["event_id"]
        if last["type"] == "m.room.member":
            assert state[("m.room.member", last["state_key"])]["event_id"] == last["event_id"]

    # /members?at= gives the members at a point of the timeline.
    messages_page = all_messages(alice, room_id)
    positions = {}
    for event_id, _ in topic_events:
        context = alice.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(event_id)}", params={"limit": 0}).json()
        positions[event_id] = context["end"]
    assert messages_page
    for index, member in enumerate(members):
        join_topic = joined_at[member.user_id]
        position_before = topic_events[[e for e, _ in topic_events].index(join_topic)][0]
        at = positions[position_before]
        chunk = alice.api.get(f"{V3}/rooms/{q(room_id)}/members", params={"at": at}).json()["chunk"]
        joined = {e["state_key"] for e in chunk if e["content"]["membership"] == "join"}
        assert {m.user_id for m in members[:index]} <= joined
        assert member.user_id not in joined
        assert {m.user_id for m in members[index + 1 :]}.isdisjoint(joined)

    # Current state.
    current = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.topic").json()
    assert current["topic"] == "topic 119"
    joined_now = alice.api.get(f"{V3}/rooms/{q(room_id)}/joined_members").json()["joined"]
    assert set(joined_now) == {alice.user_id, *(m.user_id for m in members)}

    # Storage: deltas chain at most MAX_DELTA_DEPTH deep, snapshots in between.
    async with open_event_store(server) as store:
        async with store.db.read() as conn:
            rows = list(
                await conn.execute(
                    select(state_groups.c.id, state_groups.c.prev_group, state_groups.c.delta_depth)
                    .where(state_groups.c.room_id == room_id)
                    .order_by(state_groups.c.id)
                )
            )
        snapshots = [row for row in rows if row.prev_group is None]
        assert len(rows) > 2 * MAX_DELTA_DEPTH
        assert len(snapshots) >= len(rows) // MAX_DELTA_DEPTH
        assert max(row.delta_depth for row in rows) <= MAX_DELTA_DEPTH
        by_id = {row.id: row for row in rows}
        for row in rows:
            if row.prev_group is not None:
                assert by_id[row.prev_group].delta_depth == row.delta_depth - 1
        # A fresh store (no cache) reads every group back to the same state as the
        # events recorded.
        stored = await store.room_events(room_id, backwards=False, limit=10_000)
        state: dict[tuple[str, str], str] = {}
        for event in stored:
            if event.state_key is not None:
                state[(event.type, event.state_key)] = event.event_id
            group = await store.get_state_group_of(event.event_id)
            assert group is not None
            assert await store.state.get_state_ids(group) == state, event.event_id


async def test_cold_start_concurrent_reads_and_sends_stay_linear(make_server: Callable[..., ServerProcess]) -> None:
    """Right after a restart no room head is cached: reads that load it concurrently
    with sends must not replace a head a writer already advanced (that would fork
    the graph or lose state)."""
    server = make_server()
    alice = register_user(server.base_url)
    room_id = create_room(alice, preset="public_chat")
    text(alice, room_id, "before restart")
    server.stop()
    server.start()
    headers = {"Authorization": f"Bearer {alice.access_token}"}

    async def send_one(client: httpx.AsyncClient, i: int) -> None:
        response = await client.put(
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/cold{i}", json={"msgtype": "m.text", "body": str(i)}, headers=headers
        )
        assert response.status_code == 200, response.text

    async def read_one(client: httpx.AsyncClient, i: int) -> None:
        path = [f"/state/m.room.member/{q(alice.user_id)}", "/messages?dir=b&limit=5", "/members", "/joined_members"][i % 4]
        response = await client.get(f"{V3}/rooms/{q(room_id)}{path}", headers=headers)
        assert response.status_code == 200, response.text

    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        tasks = []
        for i in range(40):
            tasks.append(read_one(client, i))
            tasks.append(send_one(client, i))
        await asyncio.gather(*tasks)
    stored = await _db_room_events(server, room_id)
    for previous, event in zip(stored, stored[1:]):
        assert event.pdu["prev_events"] == [previous.event_id]
    assert await _extremities(server, room_id) == [stored[-1].event_id]
    assert len([e for e in stored if e.type == "m.room.message"]) == 41
    assert_no_server_errors(server)


async def test_identical_concurrent_creates_make_distinct_rooms(server: ServerProcess) -> None:
    """v12 room IDs hash the create event: identical creates in one millisecond must not collide."""
    user = register_user(server.base_url)
    headers = {"Authorization": f"Bearer {user.access_token}"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        responses = await asyncio.gather(
            *[client.post(f"{V3}/createRoom", json={"room_version": "12"}, headers=headers) for _ in range(20)]
        )
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    assert len({r.json()["room_id"] for r in responses}) == 20
