"""The Client-Server API's routes, as the spec groups them."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from homeserver.api import (
    account,
    devices,
    discovery,
    login,
    media,
    notifications,
    profile,
    push_rules,
    pushers,
    register,
)

CLIENT_V3 = "/_matrix/client/v3"
CLIENT_V1 = "/_matrix/client/v1"
MEDIA_V3 = "/_matrix/media/v3"
MEDIA_V1 = "/_matrix/media/v1"
CLIENT_MEDIA = f"{CLIENT_V1}/media"


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
        # Push notifications: pushers and the notifications list
        Route(f"{v3}/pushers", pushers.get_pushers, methods=["GET"]),
        Route(f"{v3}/pushers/set", pushers.set_pusher, methods=["POST"]),
        Route(f"{v3}/notifications", notifications.get_notifications, methods=["GET"]),
        # Push rules
        Route(f"{v3}/pushrules/", push_rules.get_all, methods=["GET"]),
        Route(f"{v3}/pushrules/global/", push_rules.get_global, methods=["GET"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}", push_rules.get_rule, methods=["GET"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}", push_rules.put_rule, methods=["PUT"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}", push_rules.delete_rule, methods=["DELETE"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}/enabled", push_rules.get_enabled, methods=["GET"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}/enabled", push_rules.put_enabled, methods=["PUT"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}/actions", push_rules.get_actions, methods=["GET"]),
        Route(f"{v3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}/actions", push_rules.put_actions, methods=["PUT"]),
        # Content repository: uploads
        Route(f"{MEDIA_V3}/upload", media.upload, methods=["POST"]),
        Route(f"{MEDIA_V1}/create", media.create, methods=["POST"]),
        Route(f"{MEDIA_V3}/upload/{{server_name}}/{{media_id}}", media.upload_to_created, methods=["PUT"]),
        # Content repository: authenticated media (spec v1.11+)
        Route(f"{CLIENT_MEDIA}/config", media.config, methods=["GET"]),
        Route(f"{CLIENT_MEDIA}/preview_url", media.preview_url, methods=["GET"]),
        Route(f"{CLIENT_MEDIA}/download/{{server_name}}/{{media_id}}", media.download, methods=["GET"]),
        Route(f"{CLIENT_MEDIA}/download/{{server_name}}/{{media_id}}/{{file_name:path}}", media.download, methods=["GET"]),
        Route(f"{CLIENT_MEDIA}/thumbnail/{{server_name}}/{{media_id}}", media.thumbnail, methods=["GET"]),
        # Content repository: legacy endpoints (downloads unauthenticated, switchable)
        Route(f"{MEDIA_V3}/config", media.legacy_config, methods=["GET"]),
        Route(f"{MEDIA_V3}/preview_url", media.legacy_preview_url, methods=["GET"]),
        Route(f"{MEDIA_V3}/download/{{server_name}}/{{media_id}}", media.legacy_download, methods=["GET"]),
        Route(f"{MEDIA_V3}/download/{{server_name}}/{{media_id}}/{{file_name:path}}", media.legacy_download, methods=["GET"]),
        Route(f"{MEDIA_V3}/thumbnail/{{server_name}}/{{media_id}}", media.legacy_thumbnail, methods=["GET"]),
    ]
