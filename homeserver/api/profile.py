"""User profiles: display name and avatar (spec: Client-Server API, "Profiles")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import require_user
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.http import json_response, read_json
from homeserver.identifiers import split_user_id

FIELDS = ("displayname", "avatar_url")
MAX_DISPLAYNAME_LENGTH = 256
MAX_AVATAR_URL_LENGTH = 1000


async def _local_profile(request: Request) -> dict[str, Any]:
    hs = request.app.state.hs
    user_id = request.path_params["user_id"]
    parts = split_user_id(user_id)
    if parts is None:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
    if parts[1] != hs.server_name:
        if hs.federation is None:
            raise not_found("Profile not found")
        return dict(await hs.federation.query_profile(user_id))
    user = await hs.accounts.get_user(user_id)
    if user is None:
        raise not_found("Profile not found")
    return {k: v for k, v in (("displayname", user.displayname), ("avatar_url", user.avatar_url)) if v}


async def get_profile(request: Request) -> Response:
    return json_response(await _local_profile(request))


async def get_profile_field(request: Request) -> Response:
    field = request.path_params["field"]
    if field not in FIELDS:
        raise MatrixError(404, "M_UNRECOGNIZED", "Unknown profile field")
    profile = await _local_profile(request)
    if field not in profile:
        raise not_found(f"The user has no {field}")
    return json_response({field: profile[field]})


async def set_profile_field(request: Request) -> Response:
    field = request.path_params["field"]
    if field not in FIELDS:
        raise MatrixError(404, "M_UNRECOGNIZED", "Unknown profile field")
    requester = await require_user(request)
    user_id = request.path_params["user_id"]
    if user_id != requester.user_id:
        raise forbidden("You can only change your own profile")
    body = await read_json(request)
    if field not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing {field}")
    value = body[field]
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{field} must be a string")
    limit = MAX_DISPLAYNAME_LENGTH if field == "displayname" else MAX_AVATAR_URL_LENGTH
    if value is not None and len(value) > limit:
        raise MatrixError(400, "M_INVALID_PARAM", f"{field} is longer than {limit} characters")
    await request.app.state.hs.accounts.set_profile_field(user_id, field, value or None)
    # The member event in every joined room carries the profile (spec: "Events on
    # change of profile information").
    await request.app.state.hs.membership.profile_changed(user_id)
    return json_response({})
