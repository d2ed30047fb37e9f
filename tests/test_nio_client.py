"""A real client library, matrix-nio, using the accounts API as an app would."""

from __future__ import annotations

import secrets

from nio import (
    AsyncClient,
    DevicesResponse,
    LoginResponse,
    ProfileGetDisplayNameResponse,
    RegisterResponse,
    WhoamiResponse,
)

from tests.conftest import User
from tests.server import ServerProcess


async def test_nio_login_and_whoami(server: ServerProcess, user: User) -> None:
    client = AsyncClient(server.base_url, user.user_id)
    try:
        login = await client.login(user.password, device_name="nio test")
        assert isinstance(login, LoginResponse), login
        assert login.user_id == user.user_id
        whoami = await client.whoami()
        assert isinstance(whoami, WhoamiResponse), whoami
        assert whoami.user_id == user.user_id
        assert whoami.device_id == login.device_id
        devices = await client.devices()
        assert isinstance(devices, DevicesResponse), devices
        names = {d.id: d.display_name for d in devices.devices}
        assert names[login.device_id] == "nio test"
    finally:
        await client.logout()
        await client.close()


async def test_nio_register_and_set_display_name(server: ServerProcess) -> None:
    localpart = "nio" + secrets.token_hex(4)
    client = AsyncClient(server.base_url)
    try:
        registered = await client.register(localpart, "a strong password", device_name="nio phone")
        assert isinstance(registered, RegisterResponse), registered
        assert registered.user_id == f"@{localpart}:{server.server_name}"
        await client.set_displayname("Nio User")
        name = await client.get_displayname()
        assert isinstance(name, ProfileGetDisplayNameResponse), name
        assert name.displayname == "Nio User"
    finally:
        await client.close()


async def test_nio_wrong_password_is_an_error(server: ServerProcess, user: User) -> None:
    client = AsyncClient(server.base_url, user.user_id)
    try:
        response = await client.login("not the password")
        assert not isinstance(response, LoginResponse)
        assert response.status_code == "M_FORBIDDEN"
    finally:
        await client.close()
