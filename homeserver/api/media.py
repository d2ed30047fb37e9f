"""The content repository (spec: Client-Server API, "Content repository").

Authenticated endpoints live under /_matrix/client/v1/media; uploads and /create under
/_matrix/media/v3 and /v1 (the spec has no others). The legacy /_matrix/media/v3
download, thumbnail, config and preview_url endpoints, superseded in spec v1.11, can be
switched off in config (`media.enable_legacy_endpoints`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from homeserver.auth import require_user
from homeserver.errors import MatrixError, missing_param, not_found
from homeserver.http import json_response, query_bool, query_int
from homeserver.media import MediaFile, MediaService
from homeserver.media.headers import sanitise_filename, serving_headers


def _media(request: Request) -> MediaService:
    return request.app.state.hs.media  # type: ignore[no-any-return]


# Uploads


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body chunk by chunk, as it arrives; never held whole in memory."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        # Nobody is left to answer, but this keeps a vanished client out of the error
        # log; the service has already dropped the partial file.
        raise MatrixError(400, "M_UNKNOWN", "The upload was interrupted") from None


async def upload(request: Request) -> Response:
    requester = await require_user(request)
    content_uri = await _media(request).upload(
        requester.user_id,
        _body(request),
        content_length=request.headers.get("content-length"),
        content_type=request.headers.get("content-type"),
        filename=request.query_params.get("filename"),
    )
    return json_response({"content_uri": content_uri})


async def create(request: Request) -> Response:
    requester = await require_user(request)
    content_uri, expires_at = await _media(request).create(requester.user_id)
    return json_response({"content_uri": content_uri, "unused_expires_at": expires_at})


async def upload_to_created(request: Request) -> Response:
    requester = await require_user(request)
    await _media(request).upload_to(
        requester.user_id,
        request.path_params["server_name"],
        request.path_params["media_id"],
        _body(request),
        content_length=request.headers.get("content-length"),
        content_type=request.headers.get("content-type"),
        filename=request.query_params.get("filename"),
    )
    return json_response({})


# Downloads and thumbnails


def _serve(media: MediaFile, filename: str | None, *, thumbnail: bool, public: bool) -> Response:
    headers = serving_headers(media.content_type, filename, inline=True if thumbnail else None)
    # Content never changes under a media ID. Authenticated media must not sit in
    # shared caches, where someone without a login could get it.
    headers["Cache-Control"] = ("public" if public else "private") + ", max-age=86400, immutable"
    return FileResponse(media.path, media_type=media.content_type, headers=headers)


async def _download(request: Request, *, public: bool) -> Response:
    params = request.path_params
    media = await _media(request).download(
        params["server_name"],
        params["media_id"],
        timeout_ms=query_int(request, "timeout_ms"),
        allow_remote=query_bool(request, "allow_remote", True),
    )
    # A name in the path overrides the uploaded one (spec: .../{fileName}).
    override = params.get("file_name")
    filename = sanitise_filename(override) if override else media.filename
    return _serve(media, filename, thumbnail=False, public=public)


async def _thumbnail(request: Request, *, public: bool) -> Response:
    width = query_int(request, "width")
    height = query_int(request, "height")
    if width is None or height is None:
        raise missing_param("width and height are required")
    # animated=true may be answered with a still image (spec: "SHOULD ... if
    # supported"); the value is still checked.
    query_bool(request, "animated", False)
    params = request.path_params
    media = await _media(request).thumbnail(
        params["server_name"],
        params["media_id"],
        width,
        height,
        request.query_params.get("method", "scale"),
        timeout_ms=query_int(request, "timeout_ms"),
        allow_remote=query_bool(request, "allow_remote", True),
    )
    return _serve(media, media.filename, thumbnail=True, public=public)


async def download(request: Request) -> Response:
    await require_user(request)
    return await _download(request, public=False)


async def thumbnail(request: Request) -> Response:
    await require_user(request)
    return await _thumbnail(request, public=False)


def _require_legacy_enabled(request: Request) -> None:
    if not request.app.state.hs.config.media.enable_legacy_endpoints:
        # Spec v1.11: a server that froze unauthenticated media answers 404 M_NOT_FOUND.
        raise not_found("Unauthenticated media access is disabled; use /_matrix/client/v1/media")


async def legacy_download(request: Request) -> Response:
    _require_legacy_enabled(request)
    return await _download(request, public=True)


async def legacy_thumbnail(request: Request) -> Response:
    _require_legacy_enabled(request)
    return await _thumbnail(request, public=True)


# Configuration and URL previews


async def config(request: Request) -> Response:
    await require_user(request)
    return json_response({"m.upload.size": request.app.state.hs.config.limits.max_upload_bytes})


async def preview_url(request: Request) -> Response:
    await require_user(request)
    # Previews are off (config media.url_preview_enabled): the server fetches nothing.
    raise MatrixError(403, "M_FORBIDDEN", "URL previews are disabled on this server")


async def legacy_config(request: Request) -> Response:
    _require_legacy_enabled(request)
    return await config(request)


async def legacy_preview_url(request: Request) -> Response:
    _require_legacy_enabled(request)
    return await preview_url(request)
