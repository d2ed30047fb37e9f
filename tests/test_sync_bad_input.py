"""Bad input on the sync, ephemeral and key routes: a Matrix 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import V3, User
from tests.test_sync import create_room

ROOM = "{room}"
JSON_ROUTES: list[tuple[str, str, list[object]]] = [
    ("POST", f"{V3}/user/{{user}}/filter", [{"room": []}, {"room": {"timeline": {"limit": -1}}}, {"event_fields": "x"}, {"presence": {"senders": [1]}}]),
    ("PUT", f"{V3}/rooms/{ROOM}/typing/{{user}}", [{}, {"typing": "yes"}, {"typing": True, "timeout": "10"}, {"typing": True, "timeout": -5}]),
    ("POST", f"{V3}/rooms/{ROOM}/receipt/m.read/$nope", [{"thread_id": 5}, {"thread_id": ""}, {"thread_id": "nothread"}]),
    ("POST", f"{V3}/rooms/{ROOM}/read_markers", [{"m.fully_read": 5}, {"m.read": ["$x"]}, {"m.fully_read": "$unknown"}]),
    ("PUT", f"{V3}/user/{{user}}/rooms/{ROOM}/tags/u.x", [{"order": "first"}, {"order": True}]),
    ("PUT", f"{V3}/presence/{{user}}/status", [{}, {"presence": "away"}, {"presence": "online", "status_msg": 5}]),
    ("PUT", f"{V3}/sendToDevice/m.test/{{txn}}", [{}, {"messages": []}, {"messages": {"@a:b": []}}, {"messages": {"@a:b": {"D": "x"}}}]),
    ("POST", f"{V3}/keys/upload", [{"device_keys": []}, {"device_keys": {"user_id": "@other:x"}}, {"one_time_keys": []}, {"one_time_keys": {"nocolon": {}}}, {"fallback_keys": {"a:b": 5}}]),
    ("POST", f"{V3}/keys/query", [{}, {"device_keys": []}, {"device_keys": {"@a:b": "all"}}]),
    ("POST", f"{V3}/keys/claim", [{}, {"one_time_keys": []}, {"one_time_keys": {"@a:b": {"D": 5}}}]),
    ("POST", f"{V3}/keys/device_signing/upload", [{"master_key": []}, {"master_key": {"user_id": "@x:y"}}, {"self_signing_key": {"usage": "self_signing"}}]),
    ("POST", f"{V3}/keys/signatures/upload", [{"@a:b": []}, {"@a:b": "x"}]),
    ("POST", f"{V3}/room_keys/version", [{}, {"algorithm": 5, "auth_data": {}}, {"algorithm": "x", "auth_data": []}]),
]


def _fill(path: str, user: User, room_id: str) -> str:
    return path.replace("{user}", user.user_id).replace(ROOM, room_id).replace("{txn}", "t" + str(id(path)))


@pytest.fixture
def room(user: User) -> str:
    return create_room(user)


@pytest.mark.parametrize(("method", "path", "shapes"), JSON_ROUTES)
def test_malformed_json_and_wrong_shapes(method: str, path: str, shapes: list[object], user: User, room: str) -> None:
    url = _fill(path, user, room)
    for raw in [b"{", b"[1]", b"null", b'{"a": NaN}']:
        response = user.api.request(method, url, content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["errcode"] == "M_NOT_JSON"
    for body in shapes:
        response = user.api.request(method, url, json=body, headers={"x-test-skip-spec": "1"})
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert response.json()["errcode"].startswith("M_"), body


def test_bad_query_parameters(user: User, new_user: Callable[..., User]) -> None:
    for params in ({"timeout": "x"}, {"full_state": "maybe"}, {"since": "s1_2"}, {"filter": "[]"}):
        response = user.api.get(f"{V3}/sync", params=params)
        assert response.status_code == 400, params
    other = new_user()
    assert user.api.post(f"{V3}/user/{other.user_id}/filter", json={}).status_code == 403
    assert user.api.get(f"{V3}/keys/changes", params={"from": "s0_0_0_0_0_0_0"}).status_code == 400
    assert user.api.get(f"{V3}/room_keys/keys", params={"version": "abc"}).status_code == 404
    assert user.api.get(f"{V3}/room_keys/keys").status_code == 400
    assert user.api.get(f"{V3}/room_keys/version/abc").status_code == 404
    assert user.api.put(f"{V3}/rooms/!x:y/typing/{user.user_id}", json={"typing": True}).status_code == 403
