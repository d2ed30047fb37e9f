"""A sweep of bad input over every JSON route: each gets its Matrix error, never a 500,
and a rejected request changes nothing."""

from __future__ import annotations

import pytest

from tests.conftest import V3, Api, User
from tests.server import ServerProcess

# (method, path) of every route that takes a JSON body; {user} is filled in per test.
JSON_ROUTES = [
    ("POST", f"{V3}/register"),
    ("POST", f"{V3}/login"),
    ("POST", f"{V3}/account/password"),
    ("POST", f"{V3}/account/deactivate"),
    ("PUT", f"{V3}/devices/{{device}}"),
    ("POST", f"{V3}/delete_devices"),
    ("PUT", f"{V3}/profile/{{user}}/displayname"),
    ("PUT", f"{V3}/profile/{{user}}/avatar_url"),
]

# Bodies of the right JSON type but the wrong shape for each route.
WRONG_SHAPES = {
    f"{V3}/register": [{"username": 5}, {"password": ["x"]}, {"inhibit_login": "yes"}, {"auth": "dummy"}],
    f"{V3}/login": [{}, {"type": 1}, {"type": "m.login.password", "user": 7, "password": "x"}, {"type": "m.login.password", "identifier": "me", "password": "x"}],
    f"{V3}/account/password": [{}, {"new_password": 5}, {"new_password": "x", "logout_devices": "no"}],
    f"{V3}/account/deactivate": [{"erase": "yes"}, {"auth": []}],
    f"{V3}/devices/{{device}}": [{"display_name": 5}],
    f"{V3}/delete_devices": [{}, {"devices": "ABC"}, {"devices": [1, 2]}],
    f"{V3}/profile/{{user}}/displayname": [{}, {"displayname": 5}, {"displayname": {"a": 1}}],
    f"{V3}/profile/{{user}}/avatar_url": [{}, {"avatar_url": 5}],
}


def _fill(path: str, user: User) -> str:
    return path.replace("{user}", user.user_id).replace("{device}", user.device_id)


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_malformed_json(method: str, path: str, user: User) -> None:
    for raw in [b"{", b"not json", b"[1, 2]", b'"string"', b"null", b'{"a": NaN}', b"\xff\xfe"]:
        response = user.api.request(method, _fill(path, user), content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["errcode"] == "M_NOT_JSON", raw


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_wrong_shapes(method: str, path: str, user: User) -> None:
    for body in WRONG_SHAPES[path]:
        response = user.api.request(method, _fill(path, user), json=body)
        assert response.status_code in (400, 401, 403), (body, response.text)
        assert response.status_code != 500
        errcode = response.json().get("errcode")
        if response.status_code == 400:
            assert errcode in ("M_BAD_JSON", "M_MISSING_PARAM", "M_UNKNOWN", "M_INVALID_PARAM"), (body, errcode)
    # Nothing changed: the user can still log in with the old password and has a profile.
    assert user.api.get(f"{V3}/account/whoami").status_code == 200


def test_body_errors_name_the_field(user: User) -> None:
    def error(path: str, body: dict[str, object]) -> tuple[int, str, str]:
        response = user.api.post(path, json=body)
        return response.status_code, response.json()["errcode"], response.json()["error"]

    status, errcode, message = error(f"{V3}/login", {"type": 1})
    assert (status, errcode) == (400, "M_BAD_JSON") and "'type'" in message and "str" in message
    # Strict: a string is not a boolean, a float is not an integer.
    status, errcode, message = error(f"{V3}/account/password", {"new_password": "x", "logout_devices": "no"})
    assert (status, errcode) == (400, "M_BAD_JSON") and "'logout_devices'" in message
    status, errcode, message = error(f"{V3}/user_directory/search", {"search_term": "a", "limit": 2.5})
    assert (status, errcode) == (400, "M_BAD_JSON") and "'limit'" in message
    status, errcode, message = error(f"{V3}/publicRooms", {"filter": {"generic_search_term": 5}})
    assert (status, errcode) == (400, "M_BAD_JSON") and "'filter.generic_search_term'" in message
    status, errcode, message = error(f"{V3}/delete_devices", {"devices": ["A", 2]})
    assert (status, errcode) == (400, "M_BAD_JSON") and "'devices.1'" in message
    status, errcode, message = error(f"{V3}/pushers/set", {"kind": None, "pushkey": "k"})
    assert (status, errcode) == (400, "M_MISSING_PARAM") and message == "Missing parameter: app_id"


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_oversize_body(method: str, path: str, user: User) -> None:
    huge = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = user.api.request(method, _fill(path, user), content=huge, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["errcode"]) == (413, "M_TOO_LARGE")


def test_oversize_body_without_content_length(user: User) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"displayname": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    response = user.api.put(
        f"{V3}/profile/{user.user_id}/displayname", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["errcode"]) == (413, "M_TOO_LARGE")


def test_unknown_route_and_wrong_method(api: Api) -> None:
    unknown = api.get(f"{V3}/no/such/endpoint")
    assert (unknown.status_code, unknown.json()["errcode"]) == (404, "M_UNRECOGNIZED")
    wrong_method = api.delete(f"{V3}/login")
    assert (wrong_method.status_code, wrong_method.json()["errcode"]) == (405, "M_UNRECOGNIZED")


def test_cors_headers_and_preflight(api: Api) -> None:
    preflight = api.options(f"{V3}/login", headers={"Origin": "https://app.element.io", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    for response in (api.get("/_matrix/client/versions"), api.get(f"{V3}/nope"), api.get(f"{V3}/account/whoami")):
        assert response.headers["access-control-allow-origin"] == "*"
        assert "PUT" in response.headers["access-control-allow-methods"]


def test_routes_from_the_fast_table_answer_like_the_others(api: Api) -> None:
    """Requests the route table places (homeserver/routing.py) skip Starlette's layers
    (homeserver/app.py, FastRoutes): their errors, CORS headers and method handling
    stay the same."""
    unauthenticated = api.get(f"{V3}/sync")
    assert (unauthenticated.status_code, unauthenticated.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    assert unauthenticated.headers["access-control-allow-origin"] == "*"
    assert unauthenticated.headers["content-type"] == "application/json"
    bad_token = api.get(f"{V3}/sync", headers={"Authorization": "Bearer nope"})
    assert (bad_token.status_code, bad_token.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    wrong_method = api.post(f"{V3}/sync", json={})
    assert (wrong_method.status_code, wrong_method.json()["errcode"]) == (405, "M_UNRECOGNIZED")
    head = api.request("HEAD", "/_matrix/client/versions")
    assert head.status_code == 200 and head.content == b""
    not_json = api.post(f"{V3}/login", content=b"{", headers={"Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()["errcode"]) == (400, "M_NOT_JSON")
    assert not_json.headers["access-control-allow-origin"] == "*"
    # Routes with path parameters.
    send = api.put(f"{V3}/rooms/!nowhere:localhost/send/m.room.message/t1", json={})
    assert (send.status_code, send.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    assert send.headers["access-control-allow-origin"] == "*"
    wrong_method = api.post(f"{V3}/rooms/!nowhere:localhost/send/m.room.message/t1", json={})
    assert (wrong_method.status_code, wrong_method.json()["errcode"]) == (405, "M_UNRECOGNIZED")
    one_segment_more = api.put(f"{V3}/rooms/!nowhere:localhost/send/m.room.message/t1/x", json={})
    assert (one_segment_more.status_code, one_segment_more.json()["errcode"]) == (404, "M_UNRECOGNIZED")
    empty_parameter = api.put(f"{V3}/rooms//send/m.room.message/t1", json={})
    assert (empty_parameter.status_code, empty_parameter.json()["errcode"]) == (404, "M_UNRECOGNIZED")


def test_any_stored_json_comes_back(user: User) -> None:
    """Account data is the client's own JSON: integers beyond 64 bits and non-ASCII
    text come back as they went in (responses are encoded by orjson, which refuses
    big integers, with the standard library behind it)."""
    content = {"big": 2**70, "negative": -(2**65), "text": "caf\u00e9 \U0001f600", "nested": [{"n": 2**63}]}
    path = f"{V3}/user/{user.user_id}/account_data/org.example.big"
    assert user.api.put(path, json=content).status_code == 200
    response = user.api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == content


def test_bad_query_parameters(api: Api) -> None:
    response = api.get(f"{V3}/register/available")
    assert (response.status_code, response.json()["errcode"]) == (400, "M_MISSING_PARAM")
    kind = api.post(f"{V3}/register", params={"kind": "admin"}, json={})
    assert (kind.status_code, kind.json()["errcode"]) == (400, "M_INVALID_PARAM")


def test_malformed_authorization_header(api: Api) -> None:
    response = api.get(f"{V3}/account/whoami", headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    assert response.json()["errcode"] in ("M_MISSING_TOKEN", "M_UNKNOWN_TOKEN")


def test_rate_limited_login_and_registration(make_server) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = make_server(
        {"rate_limits": {"enabled": True, "login": {"per_second": 0.1, "burst_count": 3}, "registration": {"per_second": 0.1, "burst_count": 2}}}
    )
    with Api(server.base_url) as api:
        statuses = [
            api.post(f"{V3}/login", json={"type": "m.login.password", "user": "x", "password": "y"}) for _ in range(5)
        ]
        assert [r.status_code for r in statuses[:3]] == [403, 403, 403]
        limited = statuses[3]
        assert limited.status_code == 429
        assert limited.json()["errcode"] == "M_LIMIT_EXCEEDED"
        assert limited.json()["retry_after_ms"] > 0
        assert int(limited.headers["retry-after"]) >= 1
        regs = [api.post(f"{V3}/register", json={"auth": {"type": "m.login.dummy"}}) for _ in range(3)]
        assert [r.status_code for r in regs] == [200, 200, 429]
