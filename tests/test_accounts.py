"""Registration, login, logout, whoami, password change and deactivation over HTTP."""

from __future__ import annotations

import secrets

from tests.conftest import V3, Api, User, register_user
from tests.server import ServerProcess


def test_register_with_dummy_auth_logs_in(api: Api, server: ServerProcess) -> None:
    localpart = "alice" + secrets.token_hex(3)
    response = api.post(
        f"{V3}/register",
        json={
            "username": localpart,
            "password": "correct horse",
            "device_id": "MYPHONE",
            "initial_device_display_name": "Alice's phone",
            "auth": {"type": "m.login.dummy"},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == f"@{localpart}:{server.server_name}"
    assert body["device_id"] == "MYPHONE"
    me = Api(server.base_url, body["access_token"]).get(f"{V3}/account/whoami").json()
    assert me == {"user_id": body["user_id"], "device_id": "MYPHONE", "is_guest": False}
    devices = Api(server.base_url, body["access_token"]).get(f"{V3}/devices").json()["devices"]
    assert [(d["device_id"], d["display_name"]) for d in devices] == [("MYPHONE", "Alice's phone")]


def test_register_uia_round_trip(api: Api) -> None:
    localpart = "bob" + secrets.token_hex(3)
    first = api.post(f"{V3}/register", json={"username": localpart, "password": "pw"})
    assert first.status_code == 401
    challenge = first.json()
    assert challenge["flows"] == [{"stages": ["m.login.dummy"]}]
    assert "errcode" not in challenge
    second = api.post(
        f"{V3}/register",
        json={"username": localpart, "password": "pw", "auth": {"type": "m.login.dummy", "session": challenge["session"]}},
    )
    assert second.status_code == 200, second.text
    # The session is spent: it cannot register a second account.
    third = api.post(
        f"{V3}/register",
        json={"username": localpart + "x", "password": "pw", "auth": {"type": "m.login.dummy", "session": challenge["session"]}},
    )
    assert third.status_code == 400


def test_register_inhibit_login_and_generated_localpart(api: Api) -> None:
    response = api.post(f"{V3}/register", json={"inhibit_login": True, "auth": {"type": "m.login.dummy"}})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"].startswith("@")
    assert "access_token" not in body and "device_id" not in body


def test_register_rejects_bad_and_taken_usernames(api: Api, user: User) -> None:
    for bad in ["Alice", "al ice", "al:ice", "", "ü", "x" * 300]:
        response = api.post(f"{V3}/register", json={"username": bad, "password": "pw", "auth": {"type": "m.login.dummy"}})
        assert response.status_code == 400, bad
        assert response.json()["errcode"] == "M_INVALID_USERNAME", bad
    taken = api.post(f"{V3}/register", json={"username": user.localpart, "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert (taken.status_code, taken.json()["errcode"]) == (400, "M_USER_IN_USE")


def test_register_available(api: Api, user: User) -> None:
    free = api.get(f"{V3}/register/available", params={"username": "free" + secrets.token_hex(4)})
    assert free.json() == {"available": True}
    taken = api.get(f"{V3}/register/available", params={"username": user.localpart})
    assert (taken.status_code, taken.json()["errcode"]) == (400, "M_USER_IN_USE")
    bad = api.get(f"{V3}/register/available", params={"username": "UPPER"})
    assert bad.json()["errcode"] == "M_INVALID_USERNAME"


def test_guest_registration_is_refused(api: Api) -> None:
    response = api.post(f"{V3}/register", params={"kind": "guest"}, json={})
    assert (response.status_code, response.json()["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


def test_closed_registration(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server({"registration": {"enabled": False}})
    with Api(server.base_url) as api:
        response = api.post(f"{V3}/register", json={"username": "x", "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert (response.status_code, response.json()["errcode"]) == (403, "M_FORBIDDEN")


def test_registration_token_flow(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server({"registration": {"enabled": True, "require_token": True, "registration_tokens": ["letmein"]}})
    with Api(server.base_url) as api:
        first = api.post(f"{V3}/register", json={"username": "tok", "password": "pw"})
        assert first.status_code == 401
        assert first.json()["flows"] == [{"stages": ["m.login.registration_token"]}]
        session = first.json()["session"]
        # Dummy auth is not a way around the token.
        dummy = api.post(f"{V3}/register", json={"username": "tok", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}})
        assert dummy.status_code in (400, 401)
        wrong = api.post(
            f"{V3}/register",
            json={"username": "tok", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "nope", "session": session}},
        )
        assert wrong.status_code == 401 and wrong.json()["errcode"] == "M_FORBIDDEN"
        right = api.post(
            f"{V3}/register",
            json={"username": "tok", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "letmein", "session": session}},
        )
        assert right.status_code == 200, right.text
        validity = api.get("/_matrix/client/v1/register/m.login.registration_token/validity", params={"token": "letmein"})
        assert validity.json() == {"valid": True}
        assert api.get(
            "/_matrix/client/v1/register/m.login.registration_token/validity", params={"token": "nope"}
        ).json() == {"valid": False}


def test_login_flows_and_password_login(api: Api, user: User, server: ServerProcess) -> None:
    assert {"type": "m.login.password"} in api.get(f"{V3}/login").json()["flows"]
    modern = api.post(
        f"{V3}/login",
        json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.localpart}, "password": user.password},
    )
    assert modern.status_code == 200
    assert modern.json()["user_id"] == user.user_id
    legacy = api.post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password, "device_id": "LEGACY"})
    assert legacy.status_code == 200 and legacy.json()["device_id"] == "LEGACY"
    token = legacy.json()["access_token"]
    assert token not in (modern.json()["access_token"], user.access_token)
    assert Api(server.base_url, token).get(f"{V3}/account/whoami").json()["device_id"] == "LEGACY"


def test_login_with_wrong_password_or_unknown_user(api: Api, user: User) -> None:
    wrong = api.post(f"{V3}/login", json={"type": "m.login.password", "user": user.localpart, "password": "wrong"})
    assert (wrong.status_code, wrong.json()["errcode"]) == (403, "M_FORBIDDEN")
    unknown = api.post(f"{V3}/login", json={"type": "m.login.password", "user": "nobody-here", "password": "x"})
    assert (unknown.status_code, unknown.json()["errcode"]) == (403, "M_FORBIDDEN")
    other = api.post(f"{V3}/login", json={"type": "m.login.token", "token": "abc"})
    assert (other.status_code, other.json()["errcode"]) == (400, "M_UNKNOWN")


def test_access_token_in_query_parameter(api: Api, user: User) -> None:
    response = api.get(f"{V3}/account/whoami", params={"access_token": user.access_token})
    assert response.json()["user_id"] == user.user_id


def test_missing_and_unknown_tokens(api: Api) -> None:
    missing = api.get(f"{V3}/account/whoami")
    assert (missing.status_code, missing.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    unknown = api.get(f"{V3}/account/whoami", headers={"Authorization": "Bearer not-a-token"})
    assert (unknown.status_code, unknown.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")


def test_logout_ends_the_session_and_deletes_the_device(user: User, server: ServerProcess) -> None:
    assert user.api.post(f"{V3}/logout").json() == {}
    assert user.api.get(f"{V3}/account/whoami").json()["errcode"] == "M_UNKNOWN_TOKEN"
    login = Api(server.base_url).post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password})
    devices = Api(server.base_url, login.json()["access_token"]).get(f"{V3}/devices").json()["devices"]
    assert user.device_id not in [d["device_id"] for d in devices]


def test_logout_all(user: User, server: ServerProcess) -> None:
    second = Api(server.base_url).post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password})
    other = Api(server.base_url, second.json()["access_token"])
    assert user.api.post(f"{V3}/logout/all").status_code == 200
    assert user.api.get(f"{V3}/account/whoami").status_code == 401
    assert other.get(f"{V3}/account/whoami").status_code == 401


def test_password_change_needs_the_old_password_and_logs_out_others(user: User, server: ServerProcess) -> None:
    other_login = Api(server.base_url).post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password})
    other = Api(server.base_url, other_login.json()["access_token"])
    first = user.api.post(f"{V3}/account/password", json={"new_password": "new-secret"})
    assert first.status_code == 401
    session = first.json()["session"]
    assert first.json()["flows"] == [{"stages": ["m.login.password"]}]
    wrong = user.api.post(
        f"{V3}/account/password",
        json={"new_password": "new-secret", "auth": {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": user.user_id}, "password": "wrong"}},
    )
    assert wrong.status_code == 401 and wrong.json()["errcode"] == "M_FORBIDDEN"
    ok = user.api.post(
        f"{V3}/account/password",
        json={"new_password": "new-secret", "auth": {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": user.user_id}, "password": user.password}},
    )
    assert ok.status_code == 200, ok.text
    assert user.api.get(f"{V3}/account/whoami").status_code == 200
    assert other.get(f"{V3}/account/whoami").status_code == 401
    api = Api(server.base_url)
    assert api.post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password}).status_code == 403
    assert api.post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": "new-secret"}).status_code == 200


def test_uia_session_cannot_be_reused_for_another_request(user: User, new_user) -> None:  # type: ignore[no-untyped-def]
    session = user.api.post(f"{V3}/account/password", json={"new_password": "x"}).json()["session"]
    other = new_user()
    response = other.api.post(
        f"{V3}/account/password",
        json={"new_password": "x", "auth": {"type": "m.login.password", "session": session, "user": other.user_id, "password": other.password}},
    )
    assert response.status_code == 403


def test_deactivate_locks_the_account(user: User, server: ServerProcess) -> None:
    first = user.api.post(f"{V3}/account/deactivate", json={})
    assert first.status_code == 401
    done = user.api.post(
        f"{V3}/account/deactivate",
        json={"auth": {"type": "m.login.password", "session": first.json()["session"], "user": user.localpart, "password": user.password}},
    )
    assert done.status_code == 200
    assert done.json()["id_server_unbind_result"] == "no-support"
    assert user.api.get(f"{V3}/account/whoami").status_code == 401
    login = Api(server.base_url).post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password})
    assert login.status_code == 403
    # The name stays taken: user IDs are never reused.
    again = Api(server.base_url).post(f"{V3}/register", json={"username": user.localpart, "password": "x", "auth": {"type": "m.login.dummy"}})
    assert again.json()["errcode"] == "M_USER_IN_USE"


def test_user_fixture_helper_registers_distinct_users(server: ServerProcess) -> None:
    a, b = register_user(server.base_url), register_user(server.base_url)
    assert a.user_id != b.user_id and a.access_token != b.access_token
