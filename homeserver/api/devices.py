"""Device management (spec: Client-Server API, "Device management")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.api.account import require_password
from homeserver.auth import require_user
from homeserver.errors import not_found
from homeserver.http import Body, json_response, read_model
from storage.devices import Device


class UpdateDeviceBody(Body):
    display_name: str | None = None


class DeleteDeviceBody(Body):
    auth: dict[str, Any] | None = None


class DeleteDevicesBody(Body):
    devices: list[str]
    auth: dict[str, Any] | None = None


def _device_json(device: Device) -> dict[str, Any]:
    # Unknown fields are null rather than absent: matrix-nio requires all four keys, and
    # Synapse has always sent them this way.
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }


async def list_devices(request: Request) -> Response:
    requester = await require_user(request)
    devices = await request.app.state.hs.devices.list_devices(requester.user_id)
    return json_response({"devices": [_device_json(d) for d in devices]})


async def get_device(request: Request) -> Response:
    requester = await require_user(request)
    device = await request.app.state.hs.devices.get_device(requester.user_id, request.path_params["device_id"])
    if device is None:
        raise not_found("Unknown device")
    return json_response(_device_json(device))


async def update_device(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, UpdateDeviceBody)
    updated = await request.app.state.hs.devices.set_display_name(
        requester.user_id, request.path_params["device_id"], body.display_name
    )
    if not updated:
        raise not_found("Unknown device")
    return json_response({})


async def delete_device(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, DeleteDeviceBody, allow_empty=True)
    device_id = request.path_params["device_id"]
    hs = request.app.state.hs
    if await hs.devices.get_device(requester.user_id, device_id) is None:
        raise not_found("Unknown device")
    await require_password(request, body.auth, requester.user_id)
    await hs.devices.delete_devices(requester.user_id, [device_id])
    return json_response({})


async def delete_devices(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, DeleteDevicesBody)
    await require_password(request, body.auth, requester.user_id)
    await request.app.state.hs.devices.delete_devices(requester.user_id, body.devices)
    return json_response({})
