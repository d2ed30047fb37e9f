"""Limits and bad input over every room route: the right Matrix error, never a 500,
and a rejected request changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import V3, User
from tests.server import ServerProcess
from tests.test_rooms_helpers import (
    V1,
    all_messages,
    assert_no_server_errors,
    create_room,
    expect_error,
    join,
    q,
    state_of,
    text,
)

ROOM = "{room}"
EVENT = "{event}"
USER = "{user}"

# (method, path template) of every room route that reads a JSON body.
JSON_ROUTES = [
    ("POST", f"{V3}/createRoom"),
    ("PUT", f"{V3}/rooms/{ROOM}/send/m.room.message/{{txn}}"),
    ("PUT", f"{V3}/rooms/{ROOM}/state/m.room.topic/"),
    ("PUT", f"{V3}/rooms/{ROOM}/state/org.example.x/key"),
    ("PUT", f"{V3}/rooms/{ROOM}/redact/{EVENT}/{{txn}}"),
    ("POST", f"{V3}/join/{ROOM}"),
    ("POST", f"{V3}/rooms/{ROOM}/join"),
    ("POST", f"{V3}/knock/{ROOM}"),
    ("POST", f"{V3}/rooms/{ROOM}/leave"),
    ("POST", f"{V3}/rooms/{ROOM}/invite"),
    ("POST", f"{V3}/rooms/{ROOM}/kick"),
    ("POST", f"{V3}/rooms/{ROOM}/ban"),
    ("POST", f"{V3}/rooms/{ROOM}/unban"),
    ("POST", f"{V3}/rooms/{ROOM}/report/{EVENT}"),
    ("PUT", f"{V3}/directory/room/{{alias}}"),
    ("PUT", f"{V3}/directory/list/room/{ROOM}"),
    ("POST", f"{V3}/publicRooms"),
    ("PUT", f"{V3}/user/{USER}/account_data/org.example.data"),
    ("PUT", f"{V3}/user/{USER}/rooms/{ROOM}/account_data/org.example.data"),
]

WRONG_SHAPES: dict[str, list[dict[str, Any]]] = {
    "createRoom": [
        {"visibility": 1},
        {"name": ["x"]},
        {"invite": [1]},
        {"initial_state": {}},
        {"initial_state": [{"content": {}}]},
        {"creation_content": []},
        {"is_direct": "yes"},
        {"power_level_content_override": "all"},
        {"room_version": 12},
    ],
    "invite": [{}, {"user_id": 5}, {"user_id": "@a:b", "reason": 1}],
    "kick": [{}, {"user_id": None}, {"user_id": "@a:b", "reason": []}],
    "ban": [{}, {"user_id": ["@a:b"]}],
    "unban": [{}, {"user_id": 1}],
    "join": [{"reason": 5}],
    "leave": [{"reason": {}}],
    "knock": [{"reason": 5}],
    "redact": [{"reason": 5}],
    "report": [{"reason": 5}, {"score": "bad"}],
    "directory/room": [{}, {"room_id": 5}],
    "directory/list": [{}, {"visibility": 1}],
    "publicRooms": [{"limit": "x"}, {"since": 1}, {"filter": "x"}, {"filter": {"generic_search_term": []}}],
}


@pytest.fixture
def setup(new_user: Callable[..., User], server: ServerProcess) -> Iterator[dict[str, Any]]:
    alice = new_user()
    room_id = create_room(alice, preset="public_chat", name="Bad input")
    event_id = text(alice, room_id, "target")
    yield {"alice": alice, "room": room_id, "event": event_id, "server": server}
    assert_no_server_errors(server)


def _fill(path: str, ctx: dict[str, Any], n: int = 0) -> str:
    return (
        path.replace(ROOM, q(ctx["room"]))
        .replace(EVENT, q(ctx["event"]))
        .replace(USER, q(ctx["alice"].user_id))
        .replace("{txn}", f"t{n}")
        .replace("{alias}", q(f"#bad{n}:{ctx['server'].server_name}"))
    )


def _snapshot(user: User, room_id: str) -> tuple[Any, ...]:
    state = {k: v["event_id"] for k, v in state_of(user, room_id).items()}
    timeline = [e["event_id"] for e in all_messages(user, room_id)]
    return state, timeline, user.api.get(f"{V3}/joined_rooms").json()


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_malformed_json(method: str, path: str, setup: dict[str, Any]) -> None:
    alice = setup["alice"]
    before = _snapshot(alice, setup["room"])
    for n, raw in enumerate([b"{", b"not json", b"[1, 2]", b'"string"', b"null", b'{"a": NaN}', b'{"a": Infinity}', b"\xff\xfe"]):
        response = alice.api.request(
            method, _fill(path, setup, n), content=raw, headers={"Content-Type": "application/json"}
        )
        expect_error(response, 400, "M_NOT_JSON")
    assert _snapshot(alice, setup["room"]) == before


def _shape_key(path: str) -> str | None:
    if path.endswith("/createRoom"):
        return "createRoom"
    if "/join" in path:
        return "join"
    for key in ("invite", "kick", "ban", "unban", "leave", "knock", "redact", "report", "directory/room", "directory/list", "publicRooms"):
        if f"/{key}" in path:
            return key
    return None  # free-form event content and account data


@pytest.mark.parametrize(("method", "path"), [r for r in JSON_ROUTES if _shape_key(r[1])])
def test_wrong_shapes(method: str, path: str, setup: dict[str, Any]) -> None:
    alice = setup["alice"]
    key = _shape_key(path)
    assert key is not None
    before = _snapshot(alice, setup["room"])
    for n, body in enumerate(WRONG_SHAPES[key]):
        response = alice.api.request(method, _fill(path, setup, n), json=body)
        error = expect_error(response, 400)
        assert error["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM", "M_INVALID_PARAM"), (body, error)
    assert _snapshot(alice, setup["room"]) == before


def test_event_limits(setup: dict[str, Any]) -> None:
    alice, room_id = setup["alice"], setup["room"]
    before = _snapshot(alice, room_id)
    base = f"{V3}/rooms/{q(room_id)}"
    big = {"msgtype": "m.text", "body": "x" * 66000}
    expect_error(alice.api.put(f"{base}/send/m.room.message/big", json=big), 413, "M_TOO_LARGE")
    expect_error(alice.api.put(f"{base}/state/org.example.big/", json={"v": "y" * 66000}), 413, "M_TOO_LARGE")
    # Just under the limit is fine (the server's own fields count too).
    near = {"msgtype": "m.text", "body": "z" * 64000}
    assert alice.api.put(f"{base}/send/m.room.message/near", json=near).status_code == 200
    before = _snapshot(alice, room_id)
    long_type = "t" * 256
    expect_error(alice.api.put(f"{base}/send/{long_type}/lt", json={}), 400)
    expect_error(alice.api.put(f"{base}/state/{long_type}/", json={}), 400)
    expect_error(alice.api.put(f"{base}/state/org.example.x/{'k' * 256}", json={}), 400)
    multibyte = "é" * 128  # 256 bytes
    expect_error(alice.api.put(f"{base}/state/org.example.x/{q(multibyte)}", json={}), 400)
    assert alice.api.put(f"{base}/state/org.example.x/{'k' * 255}", json={}).status_code == 200
    before = _snapshot(alice, room_id)
    for n, raw in enumerate(
        [b'{"body": 1.5}', b'{"n": {"deep": [0.1]}}', b'{"n": 1e400}', b'{"n": 9007199254740992}', b'{"n": -9007199254740992}', b'{"s": "\\ud800"}']
    ):
        for path in (f"{base}/send/m.room.message/f{n}", f"{base}/state/org.example.f/{n}"):
            response = alice.api.put(path, content=raw, headers={"Content-Type": "application/json"})
            expect_error(response, 400, "M_BAD_JSON")
    assert _snapshot(alice, room_id) == before


def test_unknown_and_invalid_rooms(setup: dict[str, Any], new_user: Callable[..., User]) -> None:
    alice, server = setup["alice"], setup["server"]
    bob = new_user()
    event = q(setup["event"])
    for room_id, status in (("!unknown:" + server.server_name, 404), ("!" + "a" * 43, 404), ("notaroom", 400), ("!" + "x" * 300, 400)):
        r = q(room_id)
        requests = [
            ("PUT", f"{V3}/rooms/{r}/send/m.room.message/u1", {"body": "x", "msgtype": "m.text"}),
            ("PUT", f"{V3}/rooms/{r}/state/m.room.topic/", {"topic": "x"}),
            ("GET", f"{V3}/rooms/{r}/state/m.room.topic/", None),
            ("GET", f"{V3}/rooms/{r}/state", None),
            ("GET", f"{V3}/rooms/{r}/messages?dir=b", None),
            ("GET", f"{V3}/rooms/{r}/context/{event}", None),
            ("GET", f"{V3}/rooms/{r}/event/{event}", None),
            ("GET", f"{V3}/rooms/{r}/members", None),
            ("GET", f"{V3}/rooms/{r}/joined_members", None),
            ("GET", f"{V3}/rooms/{r}/aliases", None),
            ("PUT", f"{V3}/rooms/{r}/redact/{event}/u2", {}),
            ("POST", f"{V3}/rooms/{r}/invite", {"user_id": bob.user_id}),
            ("POST", f"{V3}/rooms/{r}/kick", {"user_id": bob.user_id}),
            ("POST", f"{V3}/rooms/{r}/ban", {"user_id": bob.user_id}),
            ("POST", f"{V3}/rooms/{r}/unban", {"user_id": bob.user_id}),
            ("POST", f"{V3}/rooms/{r}/leave", {}),
            ("POST", f"{V3}/rooms/{r}/join", {}),
            ("POST", f"{V3}/join/{r}", {}),
            ("POST", f"{V3}/knock/{r}", {}),
            ("POST", f"{V3}/rooms/{r}/report/{event}", {}),
            ("GET", f"{V1}/rooms/{r}/relations/{event}", None),
            ("GET", f"{V1}/rooms/{r}/threads", None),
            ("GET", f"{V3}/directory/list/room/{r}", None),
            ("PUT", f"{V3}/directory/list/room/{r}", {"visibility": "public"}),
        ]
        for method, path, body in requests:
            response = alice.api.request(method, path, json=body)
            expect_error(response, status)
            if status == 404 and not path.startswith(f"{V3}/knock") and not path.startswith(f"{V3}/join/"):
                assert response.json()["errcode"] == "M_NOT_FOUND", (path, response.text)
            if status == 400:
                assert response.json()["errcode"] in ("M_INVALID_PARAM", "M_UNRECOGNIZED"), (path, response.text)
    expect_error(alice.api.put(f"{V3}/directory/room/{q('#x:' + server.server_name)}", json={"room_id": "nope"}), 400)


def test_forbidden_actions_have_reasons_and_change_nothing(setup: dict[str, Any], new_user: Callable[..., User]) -> None:
    alice, room_id = setup["alice"], setup["room"]
    bob, eve = new_user(), new_user()
    join(bob, room_id)
    before = _snapshot(alice, room_id)
    base = f"{V3}/rooms/{q(room_id)}"
    attempts = [
        bob.api.put(f"{base}/state/m.room.name/", json={"name": "bob's"}),
        bob.api.put(f"{base}/state/m.room.power_levels/", json={"users": {bob.user_id: 100}}),
        bob.api.put(f"{base}/redact/{q(setup['event'])}/x", json={}),
        bob.api.post(f"{base}/kick", json={"user_id": alice.user_id}),
        bob.api.post(f"{base}/ban", json={"user_id": alice.user_id}),
        eve.api.put(f"{base}/send/m.room.message/x", json={"msgtype": "m.text", "body": "let me in"}),
        eve.api.put(f"{base}/state/m.room.topic/", json={"topic": "eve was here"}),
        eve.api.post(f"{base}/leave", json={}),
        bob.api.put(f"{base}/state/m.room.member/{q(eve.user_id)}", json={"membership": "join"}),
        bob.api.put(f"{base}/state/m.room.create/", json={}),
        bob.api.put(f"{V3}/directory/list/room/{q(room_id)}", json={"visibility": "public"}),
        bob.api.put(f"{V3}/user/{q(alice.user_id)}/account_data/x", json={}),
    ]
    for response in attempts:
        error = expect_error(response, 403, "M_FORBIDDEN")
        assert len(error["error"]) > 5
    assert _snapshot(alice, room_id) == before


def test_bad_pagination(setup: dict[str, Any]) -> None:
    alice, room_id, event = setup["alice"], setup["room"], setup["event"]
    messages = f"{V3}/rooms/{q(room_id)}/messages"
    for params in (
        {"dir": "x"},
        {},
        {"dir": "b", "from": "garbage"},
        # (s-1 is valid: backfilled history sits at negative positions.)
        {"dir": "b", "from": "s-"},
        {"dir": "b", "from": "s--1"},
        {"dir": "b", "from": "s" + "9" * 30},
        {"dir": "b", "from": "s١٢"},
        {"dir": "b", "to": "nope"},
        {"dir": "b", "limit": "-1"},
        {"dir": "b", "limit": "ten"},
        {"dir": "b", "limit": "9" * 40},
        {"dir": "b", "filter": "{"},
        {"dir": "b", "filter": "[]"},
        {"dir": "b", "filter": json.dumps({"types": "m.room.message"})},
        {"dir": "b", "filter": json.dumps({"limit": "5"})},
    ):
        response = alice.api.get(messages, params=params)
        assert response.status_code == 400 or (params.get("limit") == "9" * 40 and response.status_code == 200), (params, response.text)
    for params in ({"limit": 0}, {"limit": 0, "dir": "f"}):
        response = alice.api.get(messages, params={"dir": "b", **params})
        assert response.status_code == 200 and response.json()["chunk"] == []
    relations = f"{V1}/rooms/{q(room_id)}/relations/{q(event)}"
    for params in ({"dir": "x"}, {"from": "x"}, {"to": "x"}, {"limit": "-5"}, {"limit": "a"}):
        expect_error(alice.api.get(relations, params=params), 400)
    assert alice.api.get(relations, params={"limit": 0}).status_code == 200
    threads = f"{V1}/rooms/{q(room_id)}/threads"
    for params in ({"from": "x"}, {"limit": "-1"}, {"include": "some"}):
        expect_error(alice.api.get(threads, params=params), 400)
    assert alice.api.get(threads, params={"limit": 0}).status_code == 200
    context = f"{V3}/rooms/{q(room_id)}/context/{q(event)}"
    for params in ({"limit": "-1"}, {"limit": "x"}, {"filter": "{"}):
        expect_error(alice.api.get(context, params=params), 400)
    expect_error(alice.api.get(f"{V3}/rooms/{q(room_id)}/context/{q('$missing')}"), 404, "M_NOT_FOUND")
    expect_error(alice.api.get(f"{V3}/rooms/{q(room_id)}/event/{q('$missing')}"), 404, "M_NOT_FOUND")
    expect_error(alice.api.get(f"{V3}/rooms/{q(room_id)}/members", params={"at": "s" + "9" * 25}), 400)


def test_nul_and_odd_characters(setup: dict[str, Any]) -> None:
    """NUL and friends in path segments, query strings and bodies: 400 or stored
    intact, never a database error (PostgreSQL refuses NUL in text)."""
    alice, room_id, server = setup["alice"], setup["room"], setup["server"]
    base = f"{V3}/rooms/{q(room_id)}"
    before = _snapshot(alice, room_id)
    for path in (
        f"{base}/send/m.x%00y/nul1",
        f"{base}/send/m.room.message/nul%002",
        f"{base}/state/m.x%00/",
        f"{base}/state/org.example/k%00",
        f"{V3}/rooms/{q(room_id + chr(0))}/send/m.room.message/nul3",
    ):
        response = alice.api.put(path, json={"body": "x", "msgtype": "m.text"})
        expect_error(response, 400)
    for path in (
        f"{base}/event/{q('$x' + chr(0))}",
        f"{base}/context/{q('$x' + chr(0))}",
        f"{V1}/rooms/{q(room_id)}/relations/{q('$x' + chr(0))}",
        f"{base}/messages?dir=b&filter=" + q(json.dumps({"types": ["a\u0000"]})),
        f"{V3}/directory/room/{q('#a' + chr(0) + ':' + server.server_name)}",
        f"{base}/members?at=s1%00",
    ):
        response = alice.api.get(path)
        assert response.status_code in (400, 404), (path, response.text)
    for action, body in (
        ("invite", {"user_id": "@a\u0000:" + server.server_name}),
        ("kick", {"user_id": "@a\u0000:" + server.server_name}),
        ("ban", {"user_id": "@a\u0000b:" + server.server_name}),
        ("report/" + q(setup["event"]), {"reason": "bad\u0000reason"}),
    ):
        response = alice.api.post(f"{base}/{action}", json=body)
        assert response.status_code in (200, 400, 403, 404), (action, response.text)
    response = alice.api.put(f"{V3}/directory/room/{q('#a' + chr(0) + ':' + server.server_name)}", json={"room_id": room_id})
    expect_error(response, 400)
    expect_error(alice.api.post(f"{V3}/createRoom", json={"room_alias_name": "a\u0000b"}), 400)
    # NUL inside content is fine: it is JSON-escaped in storage.
    assert _snapshot(alice, room_id) == before
    ok = alice.api.put(f"{base}/send/m.room.message/nul-ok", json={"msgtype": "m.text", "body": "a\u0000b"})
    assert ok.status_code == 200
    served = alice.api.get(f"{base}/event/{q(ok.json()['event_id'])}").json()
    assert served["content"]["body"] == "a\u0000b"
