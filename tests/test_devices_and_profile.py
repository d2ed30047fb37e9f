"""Device management and profiles over HTTP."""

from __future__ import annotations

from tests.conftest import V3, Api, User
from tests.server import ServerProcess


def _login(server: ServerProcess, user: User, device_id: str | None = None) -> Api:
    body = {"type": "m.login.password", "user": user.user_id, "password": user.password}
    if device_id:
        body["device_id"] = device_id
    response = Api(server.base_url).post(f"{V3}/login", json=body)
    assert response.status_code == 200
    return Api(server.base_url, response.json()["access_token"])


def _password_auth(user: User, session: str) -> dict[str, object]:
    return {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": user.user_id}, "password": user.password}


def test_list_get_and_rename_devices(user: User, server: ServerProcess) -> None:
    _login(server, user, "LAPTOP")
    ids = [d["device_id"] for d in user.api.get(f"{V3}/devices").json()["devices"]]
    assert sorted(ids) == sorted([user.device_id, "LAPTOP"])
    assert user.api.put(f"{V3}/devices/LAPTOP", json={"display_name": "Work laptop"}).json() == {}
    laptop = user.api.get(f"{V3}/devices/LAPTOP").json()
    assert laptop["display_name"] == "Work laptop"
    assert isinstance(laptop["last_seen_ts"], int)
    missing = user.api.get(f"{V3}/devices/NOPE")
    assert (missing.status_code, missing.json()["errcode"]) == (404, "M_NOT_FOUND")
    assert user.api.put(f"{V3}/devices/NOPE", json={"display_name": "x"}).status_code == 404


def test_devices_of_other_users_are_invisible(user: User, new_user) -> None:  # type: ignore[no-untyped-def]
    other = new_user()
    assert other.api.get(f"{V3}/devices/{user.device_id}").status_code == 404


def test_delete_device_invalidates_its_token(user: User, server: ServerProcess) -> None:
    laptop = _login(server, user, "LAPTOP")
    challenge = user.api.request("DELETE", f"{V3}/devices/LAPTOP", json={})
    assert challenge.status_code == 401
    done = user.api.request("DELETE", f"{V3}/devices/LAPTOP", json={"auth": _password_auth(user, challenge.json()["session"])})
    assert done.status_code == 200
    assert laptop.get(f"{V3}/account/whoami").json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert user.api.get(f"{V3}/devices/LAPTOP").status_code == 404


def test_delete_devices_in_bulk(user: User, server: ServerProcess) -> None:
    phones = [_login(server, user, f"PHONE{i}") for i in range(3)]
    challenge = user.api.post(f"{V3}/delete_devices", json={"devices": ["PHONE0", "PHONE1"]})
    assert challenge.status_code == 401
    done = user.api.post(
        f"{V3}/delete_devices",
        json={"devices": ["PHONE0", "PHONE1"], "auth": _password_auth(user, challenge.json()["session"])},
    )
    assert done.status_code == 200
    assert [p.get(f"{V3}/account/whoami").status_code for p in phones] == [401, 401, 200]


def test_profile_round_trip(user: User, api: Api) -> None:
    assert api.get(f"{V3}/profile/{user.user_id}").json() == {"displayname": user.localpart}
    assert user.api.put(f"{V3}/profile/{user.user_id}/displayname", json={"displayname": "Alice Liddell"}).json() == {}
    assert user.api.put(f"{V3}/profile/{user.user_id}/avatar_url", json={"avatar_url": "mxc://example.org/abc"}).json() == {}
    assert api.get(f"{V3}/profile/{user.user_id}").json() == {"displayname": "Alice Liddell", "avatar_url": "mxc://example.org/abc"}
    assert api.get(f"{V3}/profile/{user.user_id}/displayname").json() == {"displayname": "Alice Liddell"}
    assert api.get(f"{V3}/profile/{user.user_id}/avatar_url").json() == {"avatar_url": "mxc://example.org/abc"}


def test_profile_errors(user: User, new_user, api: Api, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    other = new_user()
    forbidden = other.api.put(f"{V3}/profile/{user.user_id}/displayname", json={"displayname": "evil"})
    assert (forbidden.status_code, forbidden.json()["errcode"]) == (403, "M_FORBIDDEN")
    unauthenticated = api.put(f"{V3}/profile/{user.user_id}/displayname", json={"displayname": "x"})
    assert unauthenticated.status_code == 401
    unknown = api.get(f"{V3}/profile/@nobody:{server.server_name}")
    assert (unknown.status_code, unknown.json()["errcode"]) == (404, "M_NOT_FOUND")
    invalid = api.get(f"{V3}/profile/not-a-user-id")
    assert (invalid.status_code, invalid.json()["errcode"]) == (400, "M_INVALID_PARAM")
    wrong_type = user.api.put(f"{V3}/profile/{user.user_id}/displayname", json={"displayname": 42})
    assert (wrong_type.status_code, wrong_type.json()["errcode"]) == (400, "M_BAD_JSON")
    too_long = user.api.put(f"{V3}/profile/{user.user_id}/displayname", json={"displayname": "x" * 300})
    assert too_long.status_code == 400
    assert api.get(f"{V3}/profile/{user.user_id}").json()["displayname"] == user.localpart
