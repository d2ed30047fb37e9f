"""Pushers (spec: Client-Server API, "Push notifications": GET /pushers,
POST /pushers/set)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import require_user
from homeserver.errors import MatrixError, invalid_param, missing_param
from homeserver.http import Body, json_response, read_model
from storage.pushers import Pusher

NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512


class SetPusherBody(Body):
    kind: str | None
    app_id: str
    pushkey: str
    app_display_name: str | None = None
    device_display_name: str | None = None
    profile_tag: str | None = None
    lang: str | None = None
    data: dict[str, Any] | None = None
    append: bool = False


def _pusher_json(pusher: Pusher) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pushkey": pusher.pushkey,
        "kind": pusher.kind,
        "app_id": pusher.app_id,
        "app_display_name": pusher.app_display_name,
        "device_display_name": pusher.device_display_name,
        "lang": pusher.lang,
        "data": pusher.data,
    }
    if pusher.profile_tag is not None:
        out["profile_tag"] = pusher.profile_tag
    return out


def _check_url(data: dict[str, Any]) -> None:
    url = data.get("url")
    if url is None:
        raise missing_param("'data.url' is required for http pushers")
    if not isinstance(url, str):
        raise MatrixError(400, "M_BAD_JSON", "'data.url' must be a string")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    # The spec asks for HTTPS; plain HTTP is accepted for gateways on a private
    # network (as Synapse does).
    if parts is None or parts.scheme not in ("https", "http") or not host or parts.path != NOTIFY_PATH:
        raise invalid_param(f"'data.url' must be an http(s) URL with the path {NOTIFY_PATH}")


async def get_pushers(request: Request) -> Response:
    requester = await require_user(request)
    pushers = await request.app.state.hs.pusher.store.for_user(requester.user_id)
    return json_response({"pushers": [_pusher_json(p) for p in pushers]})


async def set_pusher(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, SetPusherBody)
    hs = request.app.state.hs
    if not body.app_id or len(body.app_id) > MAX_APP_ID_CHARS:
        raise invalid_param(f"'app_id' must be 1 to {MAX_APP_ID_CHARS} characters")
    if not body.pushkey or len(body.pushkey.encode()) > MAX_PUSHKEY_BYTES:
        raise invalid_param(f"'pushkey' must be 1 to {MAX_PUSHKEY_BYTES} bytes")
    if body.kind is None:
        await hs.pusher.delete_pusher(requester.user_id, body.app_id, body.pushkey)
        return json_response({})
    missing = [
        name
        for name in ("app_display_name", "device_display_name", "lang", "data")
        if getattr(body, name) is None
    ]
    if missing:
        raise missing_param(f"Missing parameters: {', '.join(missing)}")
    assert body.data is not None and body.lang is not None
    if body.kind == "email":
        raise invalid_param("Email pushers are not supported by this server")
    if body.kind != "http":
        raise invalid_param("'kind' must be 'http' (or null to delete)")
    _check_url(body.data)
    if "format" in body.data and not isinstance(body.data["format"], str):
        raise MatrixError(400, "M_BAD_JSON", "'data.format' must be a string")
    pusher = Pusher(
        user_id=requester.user_id,
        app_id=body.app_id,
        pushkey=body.pushkey,
        device_id=requester.device_id,
        kind=body.kind,
        app_display_name=str(body.app_display_name),
        device_display_name=str(body.device_display_name),
        profile_tag=body.profile_tag,
        lang=body.lang,
        data=body.data,
        pushkey_ts=int(time.time()),
        last_stream_ordering=0,
    )
    await hs.pusher.set_pusher(pusher, append=body.append)
    return json_response({})
