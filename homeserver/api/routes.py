"""The Client-Server API's routes, as the spec groups them."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from homeserver.api import account, devices, discovery, login, profile, register

CLIENT_V3 = "/_matrix/client/v3"
CLIENT_V1 = "/_matrix/client/v1"


def client_routes() -> list[BaseRoute]:
    v3 = CLIENT_V3
    return [
        Route("/_matrix/client/versions", discovery.versions, methods=["GET"]),
        Route("/.well-known/matrix/client", discovery.well_known_client, methods=["GET"]),
        Route("/.well-known/matrix/server", discovery.well_known_server, methods=["GET"]),
        Route(f"{v3}/capabilities", discovery.capabilities, methods=["GET"]),
        # Accounts
        Route(f"{v3}/register", register.register, methods=["POST"]),
        Route(f"{v3}/register/available", register.available, methods=["GET"]),
        Route(
            f"{CLIENT_V1}/register/m.login.registration_token/validity",
            register.token_validity,
            methods=["GET"],
        ),
        Route(f"{v3}/login", login.login_flows, methods=["GET"]),
        Route(f"{v3}/login", login.login, methods=["POST"]),
        Route(f"{v3}/logout", login.logout, methods=["POST"]),
        Route(f"{v3}/logout/all", login.logout_all, methods=["POST"]),
        Route(f"{v3}/account/whoami", account.whoami, methods=["GET"]),
        Route(f"{v3}/account/password", account.change_password, methods=["POST"]),
        Route(f"{v3}/account/deactivate", account.deactivate, methods=["POST"]),
        # Devices
        Route(f"{v3}/devices", devices.list_devices, methods=["GET"]),
        Route(f"{v3}/devices/{{device_id}}", devices.get_device, methods=["GET"]),
        Route(f"{v3}/devices/{{device_id}}", devices.update_device, methods=["PUT"]),
        Route(f"{v3}/devices/{{device_id}}", devices.delete_device, methods=["DELETE"]),
        Route(f"{v3}/delete_devices", devices.delete_devices, methods=["POST"]),
        # Profiles
        Route(f"{v3}/profile/{{user_id}}", profile.get_profile, methods=["GET"]),
        Route(f"{v3}/profile/{{user_id}}/{{field}}", profile.get_profile_field, methods=["GET"]),
        Route(f"{v3}/profile/{{user_id}}/{{field}}", profile.set_profile_field, methods=["PUT"]),
    ]
