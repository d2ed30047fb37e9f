"""Redactions, the client event format, relations, threads, replies and edits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import V3, User
from tests.test_rooms_helpers import (
    V1,
    all_messages,
    create_room,
    expect_error,
    invite,
    invite_ok,
    join,
    put_state,
    q,
    send,
    text,
)

# GET /state/{type}/{key}?format=event: the spec's response schema is a oneOf of an
# event and "any object", which every event matches twice; checked here by hand.
SKIP_SPEC = {"x-test-skip-spec": "1"}
SERVER_KEYS = ("hashes", "signatures", "auth_events", "prev_events", "depth", "origin", "membership", "prev_state")


def _event(user: User, room_id: str, event_id: str) -> dict[str, Any]:
    response = user.api.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _redact(user: User, room_id: str, event_id: str, txn: str, reason: str | None = None) -> Any:
    return user.api.put(
        f"{V3}/rooms/{q(room_id)}/redact/{q(event_id)}/{txn}", json={"reason": reason} if reason else {}
    )


def _assert_client_format(event: dict[str, Any]) -> None:
    for key in SERVER_KEYS:
        assert key not in event, (key, event)
    for key in ("event_id", "type", "sender", "origin_server_ts", "content", "unsigned"):
        assert key in event, (key, event)
    assert isinstance(event["unsigned"]["age"], int) and event["unsigned"]["age"] >= 0
    assert "replaces_state" not in event["unsigned"] or "state_key" in event


# --- 5. redactions ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_redaction_rules_and_power(version: str, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, room_version=version, preset="public_chat")
    join(bob, room_id)
    own = text(bob, room_id, "bob's secret")
    alices = text(alice, room_id, "alice's words")

    # Bob may redact his own event, not alice's (redact level 50, bob has 0).
    redaction = _redact(bob, room_id, own, "r1", reason="mine")
    assert redaction.status_code == 200, redaction.text
    denied = expect_error(_redact(bob, room_id, alices, "r2"), 403, "M_FORBIDDEN")
    assert "redact" in denied["error"]
    assert "body" in _event(alice, room_id, alices)["content"]
    # Alice (admin) may redact bob's events.
    bobs_second = text(bob, room_id, "another")
    assert _redact(alice, room_id, bobs_second, "r3").status_code == 200

    for viewer in (alice, bob):
        served = _event(viewer, room_id, own)
        assert served["content"] == {}
        because = served["unsigned"]["redacted_because"]
        assert because["event_id"] == redaction.json()["event_id"]
        assert because["type"] == "m.room.redaction"
        assert because["content"]["reason"] == "mine"
        assert because["sender"] == bob.user_id
        assert because.get("redacts", because["content"].get("redacts")) == own
        _assert_client_format(served)
        _assert_client_format(because)
        in_messages = {e["event_id"]: e for e in all_messages(viewer, room_id)}
        assert in_messages[own]["content"] == {}
        assert "redacted_because" in in_messages[own]["unsigned"]
        assert in_messages[bobs_second]["content"] == {}
        # The redaction event itself: `redacts` where the version puts it, and at the
        # top level for clients either way.
        red = in_messages[redaction.json()["event_id"]]
        assert red["redacts"] == own
        if version != "10":
            assert red["content"]["redacts"] == own

    # Unknown event, and an event of another room: 404.
    expect_error(_redact(alice, room_id, "$doesnotexist", "r4"), 404, "M_NOT_FOUND")
    other_room = create_room(alice)
    elsewhere = text(alice, other_room, "elsewhere")
    expect_error(_redact(alice, room_id, elsewhere, "r5"), 404, "M_NOT_FOUND")
    assert "body" in _event(alice, other_room, elsewhere)["content"]


@pytest.mark.parametrize("version", ["10", "11"])
def test_redacted_state_per_version_and_auth_uses_redacted_form(version: str, new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(alice, room_version=version, preset="public_chat")
    join(bob, room_id)
    power = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels").json()
    power["invite"] = 100
    power["users"][bob.user_id] = 10
    pl_event = put_state(alice, room_id, "m.room.power_levels", power)
    expect_error(invite(bob, room_id, carol), 403, "M_FORBIDDEN")
    assert _redact(alice, room_id, pl_event, "pl").status_code == 200
    served = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels").json()
    assert served["users"][bob.user_id] == 10
    if version == "10":
        # v10 redaction drops `invite`: the default (0) applies, to what is served
        # and to the auth rules alike.
        assert "invite" not in served
        invite_ok(bob, room_id, carol)
    else:
        assert served["invite"] == 100
        expect_error(invite(bob, room_id, carol), 403, "M_FORBIDDEN")
    # The creator's create event content survives redaction from v11 on.
    create_id = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.create", params={"format": "event"}, headers=SKIP_SPEC).json()["event_id"]
    assert _redact(alice, room_id, create_id, "c").status_code == 200
    create = _event(alice, room_id, create_id)
    assert create["content"]["room_version"] == version if version != "10" else "room_version" not in create["content"]


def test_redaction_via_send_and_prev_content_of_redacted_state(new_user: Callable[..., User]) -> None:
    alice = new_user()
    room_id = create_room(alice, room_version="11")
    first = put_state(alice, room_id, "m.room.topic", {"topic": "first topic"})
    second = put_state(alice, room_id, "m.room.topic", {"topic": "second topic"})
    event = _event(alice, room_id, second)
    assert event["unsigned"]["prev_content"] == {"topic": "first topic"}
    assert event["unsigned"]["replaces_state"] == first
    # Redacting through PUT /send/m.room.redaction with content.redacts (v11 style).
    send(alice, room_id, {"redacts": first}, "m.room.redaction")
    assert _event(alice, room_id, first)["content"] == {}
    # prev_content never leaks what a redaction removed.
    event = _event(alice, room_id, second)
    assert "first topic" not in str(event)
    assert event["unsigned"].get("prev_content", {}) == {}
    # A redaction needs a target.
    expect_error(
        alice.api.put(f"{V3}/rooms/{q(room_id)}/send/m.room.redaction/x1", json={"reason": "no target"}), 400, "M_BAD_JSON"
    )
    expect_error(
        alice.api.put(f"{V3}/rooms/{q(room_id)}/send/m.room.redaction/x2", json={"redacts": 5}), 400, "M_BAD_JSON"
    )


# --- 6. client event format --------------------------------------------------------------


def test_client_event_format_everywhere(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat", name="Format")
    join(bob, room_id)
    message = send(alice, room_id, {"msgtype": "m.text", "body": "hi"}, txn="fmt-txn")
    put_state(alice, room_id, "m.room.name", {"name": "Format 2"})

    own = _event(alice, room_id, message)
    _assert_client_format(own)
    assert own["unsigned"]["transaction_id"] == "fmt-txn"
    assert own["room_id"] == room_id
    other = _event(bob, room_id, message)
    assert "transaction_id" not in other["unsigned"]

    for event in all_messages(alice, room_id):
        _assert_client_format(event)
        assert event["room_id"] == room_id
        if event["event_id"] == message:
            assert event["unsigned"]["transaction_id"] == "fmt-txn"
        elif event["sender"] == alice.user_id:
            assert "transaction_id" not in event["unsigned"]
    for event in all_messages(bob, room_id):
        assert "transaction_id" not in event["unsigned"]
    context = alice.api.get(f"{V3}/rooms/{q(room_id)}/context/{q(message)}").json()
    for event in [context["event"], *context["events_before"], *context["events_after"], *context["state"]]:
        _assert_client_format(event)
    for event in alice.api.get(f"{V3}/rooms/{q(room_id)}/state").json():
        _assert_client_format(event)
    for event in alice.api.get(f"{V3}/rooms/{q(room_id)}/members").json()["chunk"]:
        _assert_client_format(event)
    name_event = alice.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.name", params={"format": "event"}, headers=SKIP_SPEC).json()
    _assert_client_format(name_event)
    assert name_event["unsigned"]["prev_content"] == {"name": "Format"}
    # The first state event of its kind has no prev_content.
    bob_join = [e for e in all_messages(alice, room_id) if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert "prev_content" not in bob_join[0]["unsigned"]
    # Profile change: the member event carries the previous membership content.
    bob.api.put(f"{V3}/profile/{q(bob.user_id)}/displayname", json={"displayname": "Bobby"})
    member = bob.api.get(f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id)}", params={"format": "event"}, headers=SKIP_SPEC).json()
    assert member["content"]["displayname"] == "Bobby"
    assert member["unsigned"]["prev_content"]["membership"] == "join"


# --- 7. relations, threads, replies, edits -------------------------------------------------


def _relations(user: User, room_id: str, event_id: str, *path: str, **params: Any) -> dict[str, Any]:
    suffix = "".join("/" + q(p) for p in path)
    response = user.api.get(f"{V1}/rooms/{q(room_id)}/relations/{q(event_id)}{suffix}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _page_all(user: User, room_id: str, event_id: str, *path: str, direction: str, limit: int) -> list[str]:
    seen: list[str] = []
    token: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"dir": direction, "limit": limit}
        if token:
            params["from"] = token
        page = _relations(user, room_id, event_id, *path, **params)
        assert len(page["chunk"]) <= limit
        seen.extend(e["event_id"] for e in page["chunk"])
        token = page.get("next_batch")
        if not token:
            return seen
    raise AssertionError("relations pagination did not end")


def test_relations_filters_and_pagination(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    parent = text(alice, room_id, "parent")
    related: list[str] = []
    for i, user in enumerate([alice, bob, alice, bob, alice]):
        related.append(send(user, room_id, {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": str(i)}}, "m.reaction"))
    for i in range(3):
        related.append(
            send(bob, room_id, {"msgtype": "m.text", "body": f"thread {i}", "m.relates_to": {"rel_type": "m.thread", "event_id": parent}})
        )
    edit = send(
        alice,
        room_id,
        {
            "msgtype": "m.text",
            "body": "* parent (edited)",
            "m.new_content": {"msgtype": "m.text", "body": "parent (edited)"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": parent},
        },
    )
    related.append(edit)
    reply = send(bob, room_id, {"msgtype": "m.text", "body": "a reply", "m.relates_to": {"m.in_reply_to": {"event_id": parent}}})
    text(alice, room_id, "unrelated")

    everything = _relations(alice, room_id, parent)["chunk"]
    assert [e["event_id"] for e in everything] == list(reversed(related))  # newest first by default
    assert reply not in [e["event_id"] for e in everything]  # replies are not relations
    annotations = _relations(alice, room_id, parent, "m.annotation")["chunk"]
    assert [e["event_id"] for e in annotations] == list(reversed(related[:5]))
    typed = _relations(alice, room_id, parent, "m.annotation", "m.reaction")["chunk"]
    assert [e["event_id"] for e in typed] == list(reversed(related[:5]))
    assert _relations(alice, room_id, parent, "m.annotation", "m.room.message")["chunk"] == []
    threads = _relations(alice, room_id, parent, "m.thread", "m.room.message")["chunk"]
    assert [e["content"]["body"] for e in threads] == ["thread 2", "thread 1", "thread 0"]
    edits = _relations(alice, room_id, parent, "m.replace")["chunk"]
    assert [e["event_id"] for e in edits] == [edit]
    assert edits[0]["content"]["m.new_content"]["body"] == "parent (edited)"
    # The original is served unchanged (servers do not apply edits).
    assert _event(alice, room_id, parent)["content"]["body"] == "parent"

    # Pagination, both directions, each event exactly once.
    for limit in (1, 2, 3, 4):
        assert _page_all(alice, room_id, parent, direction="b", limit=limit) == list(reversed(related))
        assert _page_all(alice, room_id, parent, direction="f", limit=limit) == related
        assert _page_all(alice, room_id, parent, "m.annotation", direction="f", limit=limit) == related[:5]
        assert _page_all(alice, room_id, parent, "m.annotation", "m.reaction", direction="b", limit=limit) == list(
            reversed(related[:5])
        )
        assert _page_all(alice, room_id, parent, "m.thread", "m.room.message", direction="f", limit=limit) == related[5:8]
    # `to` bounds a page.
    first_page = _relations(alice, room_id, parent, dir="f", limit=3)
    assert [e["event_id"] for e in first_page["chunk"]] == related[:3]
    # An unknown parent: 404.
    response = alice.api.get(f"{V1}/rooms/{q(room_id)}/relations/{q('$nope')}")
    expect_error(response, 404, "M_NOT_FOUND")


def test_relations_do_not_cross_rooms(new_user: Callable[..., User]) -> None:
    alice, eve = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    parent = text(alice, room_id, "parent")
    eves_room = create_room(eve)
    stray = send(eve, eves_room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "x"}}, "m.reaction")
    send(eve, eves_room, {"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": "m.thread", "event_id": parent}})
    assert stray not in [e["event_id"] for e in _relations(alice, room_id, parent)["chunk"]]
    assert _relations(alice, room_id, parent)["chunk"] == []
    threads = alice.api.get(f"{V1}/rooms/{q(room_id)}/threads").json()
    assert threads["chunk"] == []


def test_threads_list_participated_and_paging(new_user: Callable[..., User]) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    join(carol, room_id)

    def reply(user: User, root: str, body: str) -> str:
        return send(user, room_id, {"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})

    root_alice = text(alice, room_id, "alice's thread")
    root_bob = text(bob, room_id, "bob's thread")
    root_carol = text(carol, room_id, "carol's thread")
    reply(bob, root_alice, "bob in alice's")
    reply(carol, root_carol, "carol in own")
    reply(alice, root_bob, "alice in bob's")
    last = reply(carol, root_alice, "carol in alice's")
    text(alice, room_id, "not a thread")

    all_threads = alice.api.get(f"{V1}/rooms/{q(room_id)}/threads").json()
    ids = [e["event_id"] for e in all_threads["chunk"]]
    assert ids == [root_alice, root_bob, root_carol]  # by latest activity
    summary = all_threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert summary["count"] == 2
    assert summary["latest_event"]["event_id"] == last
    assert summary["current_user_participated"] is True
    # participated: threads alice started or replied in.
    mine = alice.api.get(f"{V1}/rooms/{q(room_id)}/threads", params={"include": "participated"}).json()
    assert [e["event_id"] for e in mine["chunk"]] == [root_alice, root_bob]
    bobs = bob.api.get(f"{V1}/rooms/{q(room_id)}/threads", params={"include": "participated"}).json()
    assert [e["event_id"] for e in bobs["chunk"]] == [root_alice, root_bob]
    # Paging one at a time gives every thread once.
    seen: list[str] = []
    token = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 1, **({"from": token} if token else {})}
        page = carol.api.get(f"{V1}/rooms/{q(room_id)}/threads", params=params).json()
        seen.extend(e["event_id"] for e in page["chunk"])
        token = page.get("next_batch")
        if not token:
            break
    assert seen == [root_alice, root_bob, root_carol]
    expect_error(alice.api.get(f"{V1}/rooms/{q(room_id)}/threads", params={"include": "mine"}), 400)


def test_replies_are_ordinary_messages(new_user: Callable[..., User]) -> None:
    alice = new_user()
    room_id = create_room(alice)
    parent = text(alice, room_id, "question")
    reply = send(alice, room_id, {"msgtype": "m.text", "body": "answer", "m.relates_to": {"m.in_reply_to": {"event_id": parent}}})
    served = _event(alice, room_id, reply)
    assert served["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": parent}}
