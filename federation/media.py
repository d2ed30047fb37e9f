"""Media over federation (spec: Server-Server API, "Content Repository", v1.11+).

Serving: `GET /_matrix/federation/v1/media/download/{mediaId}` and `.../thumbnail/{mediaId}`
answer signed requests for our own media with `multipart/mixed`: a JSON metadata part
(`{}`) and then the bytes, streamed from the content store.

Fetching: `RemoteMediaFetcher` is the media service's `RemoteMedia`. The first request
for `mxc://<other>/<id>` asks that server's federation endpoint (signed), streams the
file part straight into the content store (never whole in memory, at most
`limits.max_upload_bytes`), and records it in `remote_media`; later requests are served
from there. A `Location` part is followed with a plain GET. A server that answers
`404 M_UNRECOGNIZED` (older than v1.11) is asked at the legacy
`/_matrix/media/v3/download/...` with `allow_remote=false`. Thumbnails of remote media
are made locally from the cached original (homeserver/media/service.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import httpx
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from federation.client import FederationClient
from federation.inbound_auth import authenticate
from federation.request_auth import authorization_header
from homeserver.errors import MatrixError, missing_param
from homeserver.http import query_bool, query_int
from homeserver.media import MediaFile
from homeserver.media.content_store import ContentTooLarge, StagedFile
from homeserver.media.headers import (
    content_disposition,
    essence,
    normalise_content_type,
    sanitise_filename,
)
from storage.remote_media import CachedRemoteMedia, RemoteMediaStore

logger = logging.getLogger(__name__)

FED_MEDIA = "/_matrix/federation/v1/media"

# What a multipart answer may spend on anything but the file: preamble, part headers,
# the JSON metadata. A peer that sends more is broken or hostile.
MAX_PREAMBLE_BYTES = 16 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
MULTIPART_OVERHEAD = MAX_PREAMBLE_BYTES + 2 * MAX_PART_HEADER_BYTES + MAX_METADATA_BYTES

SERVE_CHUNK_BYTES = 256 * 1024
MAX_LOCATION_REDIRECTS = 5

# Spec (Client-Server API, mxc URIs): media IDs are [A-Za-z0-9_-]; anything else is
# never sent to another server.
_MEDIA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_DNS_NAME_RE = re.compile(r"^[A-Za-z0-9.-]{1,255}$")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _failed(reason: str = "Failed to fetch remote media") -> MatrixError:
    # Synapse answers the same when the origin cannot be reached or answers nonsense.
    return MatrixError(502, "M_UNKNOWN", reason)


def _too_large() -> MatrixError:
    return MatrixError(502, "M_TOO_LARGE", "Remote media is larger than this server accepts")


def valid_server_name(server_name: str) -> bool:
    """Spec grammar (Appendices, "Server Name"): host[:port], the host a DNS name, an
    IPv4 literal, or an IPv6 literal in brackets."""
    if not server_name or len(server_name) > 255:
        return False
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return False
    else:
        host, sep, port_text = server_name.rpartition(":")
        if not sep:
            host, port_text = server_name, ""
        port = port_text if sep else None
        if not host or not _DNS_NAME_RE.match(host):
            return False
    return port is None or (port.isdigit() and 0 < int(port) < 65536 and len(port) <= 5)


# Serving


def _multipart_head(boundary: str, content_type: str, disposition: str) -> bytes:
    # The JSON part's only header is exactly `Content-Type: application/json`: Synapse's
    # parser checks the first header value byte for byte.
    return (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    ).encode()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, SERVE_CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def multipart_response(media: MediaFile, *, thumbnail: bool) -> Response:
    boundary = secrets.token_hex(16)
    disposition = content_disposition(media.content_type, media.filename, inline=True if thumbnail else None)
    head = _multipart_head(boundary, media.content_type, disposition)
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in _file_chunks(media.path):
            yield chunk
        yield tail

    return StreamingResponse(
        body(),
        media_type=f"multipart/mixed; boundary={boundary}",
        headers={"Content-Length": str(len(head) + media.size + len(tail))},
    )


async def serve_download(request: Request) -> Response:
    await authenticate(request)
    hs = request.app.state.hs
    media = await hs.media.download(
        hs.server_name,
        request.path_params["media_id"],
        timeout_ms=query_int(request, "timeout_ms"),
        allow_remote=False,
    )
    return multipart_response(media, thumbnail=False)


async def serve_thumbnail(request: Request) -> Response:
    await authenticate(request)
    hs = request.app.state.hs
    width = query_int(request, "width")
    height = query_int(request, "height")
    if width is None or height is None:
        raise missing_param("width and height are required")
    # animated=true may be answered with a still image; the value is still checked.
    query_bool(request, "animated", False)
    media = await hs.media.thumbnail(
        hs.server_name,
        request.path_params["media_id"],
        width,
        height,
        request.query_params.get("method", "scale"),
        timeout_ms=query_int(request, "timeout_ms"),
        allow_remote=False,
    )
    return multipart_response(media, thumbnail=True)


# Reading multipart answers


class MalformedMultipart(Exception):
    pass


def multipart_boundary(content_type: str | None) -> str | None:
    """The boundary of a `multipart/mixed` Content-Type, or None."""
    if content_type is None or essence(content_type) != "multipart/mixed":
        return None
    for name, value in _header_params(content_type):
        if name == "boundary" and 0 < len(value) <= 200 and value.isascii() and value.isprintable():
            return value
    return None


_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _header_params(value: str) -> list[tuple[str, str]]:
    params = []
    for match in _PARAM_RE.finditer(value):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.append((match.group(1).lower(), raw))
    return params


def filename_from_disposition(value: str | None) -> str | None:
    """The filename of a Content-Disposition header (RFC 6266; `filename*` first)."""
    if not value:
        return None
    params = dict(_header_params(value))
    extended = params.get("filename*")
    if extended is not None:
        charset, _, rest = extended.partition("'")
        _language, _, encoded = rest.partition("'")
        try:
            return sanitise_filename(unquote(encoded, encoding=charset or "utf-8", errors="strict"))
        except (LookupError, UnicodeDecodeError):
            pass
    return sanitise_filename(params.get("filename"))


class MultipartReader:
    """A streaming reader of a multipart body: part headers are read whole (bounded),
    part bodies are passed on chunk by chunk, holding back only enough bytes to see a
    delimiter that straddles two chunks."""

    def __init__(self, chunks: AsyncIterator[bytes], boundary: str) -> None:
        self._chunks = chunks.__aiter__()
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        # The first delimiter may open the body without a CRLF before it.
        self._buffer = bytearray(b"\r\n")
        self._eof = False
        self._started = False
        self._finished = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def _read_until(self, marker: bytes, limit: int) -> bytes:
        start = 0
        while True:
            index = self._buffer.find(marker, start)
            if index >= 0:
                data = bytes(self._buffer[:index])
                del self._buffer[: index + len(marker)]
                return data
            if len(self._buffer) > limit + len(marker):
                raise MalformedMultipart("part header or preamble too long")
            start = max(0, len(self._buffer) - len(marker) + 1)
            if not await self._fill():
                raise MalformedMultipart("body ended early")

    async def _peek(self, size: int) -> bytes:
        while len(self._buffer) < size and await self._fill():
            pass
        return bytes(self._buffer[:size])

    async def _after_delimiter(self) -> bool:
        """Consume the rest of a delimiter line; False if it closed the body."""
        head = await self._peek(2)
        if head == b"--" or (self._eof and not self._buffer.strip(b" \t\r\n")):
            # The close delimiter (or a body that stops right after the last one).
            self._finished = True
            return False
        # Transport padding (spaces, tabs) may follow the boundary.
        padding = await self._read_until(b"\r\n", 1024)
        if padding.strip(b" \t"):
            raise MalformedMultipart("garbage after a boundary")
        return True

    async def next_part(self) -> dict[str, str] | None:
        """Move to the next part and return its headers (lower-case names); None when
        the body has no more parts. The previous part must have been read to its end."""
        if self._finished:
            return None
        if not self._started:
            self._started = True
            await self._read_until(self._delimiter, MAX_PREAMBLE_BYTES)
            if not await self._after_delimiter():
                return None
        if await self._peek(2) == b"\r\n":
            del self._buffer[:2]
            return {}
        raw = await self._read_until(b"\r\n\r\n", MAX_PART_HEADER_BYTES)
        headers: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise MalformedMultipart("malformed part header")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        return headers

    async def part_chunks(self) -> AsyncIterator[bytes]:
        """The body of the current part, as it arrives; raises MalformedMultipart if the
        answer ends before the part does (a truncated file is never taken)."""
        keep = len(self._delimiter) - 1
        while True:
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                if index:
                    yield bytes(self._buffer[:index])
                del self._buffer[: index + len(self._delimiter)]
                await self._after_delimiter()
                return
            if len(self._buffer) > keep:
                cut = len(self._buffer) - keep
                yield bytes(self._buffer[:cut])
                del self._buffer[:cut]
            if not await self._fill():
                raise MalformedMultipart("body ended inside a part")

    async def read_part(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.part_chunks():
            data += chunk
            if len(data) > limit:
                raise MalformedMultipart("part too long")
        return bytes(data)


# Fetching


class _Fetched(msgspec.Struct, frozen=True):
    staged: StagedFile
    content_type: str
    filename: str | None


class _Unrecognized(Exception):
    """The remote does not know the federation media endpoints (older than v1.11)."""


class RemoteMediaFetcher:
    """The media service's `RemoteMedia`: fetch once over federation, cache, serve."""

    def __init__(self, hs: Any, client: FederationClient) -> None:
        self.hs = hs
        self.client = client
        self.store = RemoteMediaStore(hs.db)
        # One fetch per media at a time, however many requests wait for it.
        self._fetching: dict[tuple[str, str], asyncio.Task[MediaFile | None]] = {}

    async def download(self, server_name: str, media_id: str, timeout_ms: int) -> MediaFile | None:
        if not _MEDIA_ID_RE.match(media_id) or not valid_server_name(server_name):
            return None
        cached = await self._cached(server_name, media_id)
        if cached is not None:
            return cached
        key = (server_name, media_id)
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch_and_keep(server_name, media_id, timeout_ms))
            self._fetching[key] = task

            def done(finished: asyncio.Task[MediaFile | None]) -> None:
                self._fetching.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved, even if every waiter left

            task.add_done_callback(done)
        # A client that gives up does not cancel the fetch others may be waiting on.
        return await asyncio.shield(task)

    async def _cached(self, server_name: str, media_id: str) -> MediaFile | None:
        row = await self.store.get(server_name, media_id)
        if row is None:
            return None
        files = self.hs.media.files
        if not files.exists(row.sha256):
            logger.warning("Cached remote media mxc://%s/%s is missing on disk; fetching again", server_name, media_id)
            return None
        return MediaFile(files.path_for(row.sha256), row.content_type, row.upload_name, row.size, row.sha256)

    async def _fetch_and_keep(self, server_name: str, media_id: str, timeout_ms: int) -> MediaFile | None:
        logger.info("Fetching remote media mxc://%s/%s", server_name, media_id)
        try:
            fetched = await self._fetch(server_name, media_id, timeout_ms)
        except MatrixError:
            raise
        except MalformedMultipart as exc:
            logger.warning("Bad media answer from %s for %s: %s", server_name, media_id, exc)
            raise _failed() from None
        except httpx.HTTPError as exc:
            logger.info("Could not fetch media %s from %s: %r", media_id, server_name, exc)
            raise _failed() from None
        except Exception:
            # Whatever a remote server does to us is its failure, never our 500.
            logger.exception("Fetching media %s from %s failed", media_id, server_name)
            raise _failed() from None
        if fetched is None:
            return None
        media = self.hs.media
        record = CachedRemoteMedia(
            server_name=server_name,
            media_id=media_id,
            sha256=fetched.staged.sha256,
            size=fetched.staged.size,
            content_type=fetched.content_type,
            upload_name=fetched.filename,
            fetched_ts=_now_ms(),
        )
        await media.keep_fetched(fetched.staged, lambda: self.store.add(record))
        logger.info(
            "Stored remote media mxc://%s/%s (%d bytes, %s)", server_name, media_id, record.size, record.content_type
        )
        sha256 = record.sha256
        return MediaFile(media.files.path_for(sha256), record.content_type, record.upload_name, record.size, sha256)

    async def _fetch(self, server_name: str, media_id: str, timeout_ms: int) -> _Fetched | None:
        if not self.client.allowed(server_name):
            raise _failed("Federation with this server is not allowed")
        try:
            return await self._fetch_federation(server_name, media_id, timeout_ms)
        except _Unrecognized:
            logger.info("%s does not know federation media; trying its legacy media endpoint", server_name)
            return await self._fetch_legacy(server_name, media_id, timeout_ms)

    def _timeout(self, timeout_ms: int) -> httpx.Timeout:
        # The remote may wait up to timeout_ms for an upload before the first byte.
        return httpx.Timeout(max(30.0, timeout_ms / 1000 + 10), connect=10.0)

    @property
    def _limit(self) -> int:
        return int(self.hs.media.max_upload_bytes)

    def _check_declared_length(self, response: httpx.Response, overhead: int) -> None:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit + overhead:
            raise _too_large()

    async def _stage(self, chunks: AsyncIterator[bytes]) -> StagedFile:
        try:
            return await self.hs.media.files.stage_stream(chunks, self._limit)
        except ContentTooLarge:
            raise _too_large() from None

    async def _fetch_federation(self, server_name: str, media_id: str, timeout_ms: int) -> _Fetched | None:
        endpoint = await self.client.resolver.resolve(server_name)
        uri = f"{FED_MEDIA}/download/{quote(media_id, safe='')}?" + urlencode({"timeout_ms": timeout_ms})
        headers = {
            "Host": endpoint.host_header,
            "Authorization": authorization_header(
                "GET", uri, self.client.server_name, server_name, None, self.hs.signing_key
            ),
        }
        location: str | None = None
        async with self.client.http.stream(
            "GET",
            endpoint.base_url + uri,
            headers=headers,
            timeout=self._timeout(timeout_ms),
            extensions={"sni_hostname": endpoint.host},
        ) as response:
            if response.status_code != 200:
                await self._raise_for_status(response, federation=True)
                return None
            boundary = multipart_boundary(response.headers.get("content-type"))
            if boundary is None:
                raise MalformedMultipart("not multipart/mixed with a boundary")
            self._check_declared_length(response, MULTIPART_OVERHEAD)
            reader = MultipartReader(response.aiter_bytes(), boundary)
            if await reader.next_part() is None:
                raise MalformedMultipart("no metadata part")
            metadata = await reader.read_part(MAX_METADATA_BYTES)
            try:
                json.loads(metadata)
            except ValueError:
                raise MalformedMultipart("metadata part is not JSON") from None
            part = await reader.next_part()
            if part is None:
                raise MalformedMultipart("no media part")
            location = part.get("location")
            if not location:
                staged = await self._stage(reader.part_chunks())
                return _Fetched(
                    staged,
                    normalise_content_type(part.get("content-type")),
                    filename_from_disposition(part.get("content-disposition")),
                )
        return await self._fetch_location(location)

    async def _fetch_location(self, location: str) -> _Fetched:
        """The media part was a redirect: a plain GET of that URL (not cached itself)."""
        if urlsplit(location).scheme not in ("http", "https"):
            raise MalformedMultipart("Location is not an http(s) URL")
        client = self.client.http
        url = location
        for _ in range(MAX_LOCATION_REDIRECTS + 1):
            async with client.stream("GET", url, timeout=self._timeout(0)) as response:
                if response.is_redirect and "location" in response.headers:
                    url = str(response.url.join(response.headers["location"]))
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise MalformedMultipart("redirected to a non-http(s) URL")
                    continue
                if response.status_code != 200:
                    logger.info("Media redirect target %s answered %d", location, response.status_code)
                    raise _failed()
                self._check_declared_length(response, 0)
                staged = await self._stage(response.aiter_bytes())
                return _Fetched(
                    staged,
                    normalise_content_type(response.headers.get("content-type")),
                    filename_from_disposition(response.headers.get("content-disposition")),
                )
        raise _failed("Too many redirects fetching remote media")

    async def _fetch_legacy(self, server_name: str, media_id: str, timeout_ms: int) -> _Fetched | None:
        endpoint = await self.client.resolver.resolve(server_name)
        path = f"/_matrix/media/v3/download/{quote(server_name, safe='')}/{quote(media_id, safe='')}"
        # Spec: when falling back, allow_remote=false (no fetching loops between servers).
        uri = path + "?" + urlencode({"allow_remote": "false", "timeout_ms": timeout_ms})
        async with self.client.http.stream(
            "GET",
            endpoint.base_url + uri,
            headers={"Host": endpoint.host_header},
            timeout=self._timeout(timeout_ms),
            extensions={"sni_hostname": endpoint.host},
        ) as response:
            if response.status_code != 200:
                await self._raise_for_status(response, federation=False)
                return None
            self._check_declared_length(response, 0)
            staged = await self._stage(response.aiter_bytes())
            return _Fetched(
                staged,
                normalise_content_type(response.headers.get("content-type")),
                filename_from_disposition(response.headers.get("content-disposition")),
            )

    async def _raise_for_status(self, response: httpx.Response, *, federation: bool) -> None:
        """Map an error answer to ours; returns (meaning "not found") only for 404."""
        raw = bytearray()
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) > MAX_ERROR_BODY_BYTES:
                break
        errcode = None
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and isinstance(body.get("errcode"), str):
                errcode = body["errcode"]
        except ValueError:
            pass
        status = response.status_code
        if federation and status == 404 and errcode == "M_UNRECOGNIZED":
            raise _Unrecognized()
        if status == 404:
            return
        if status == 504 and errcode == "M_NOT_YET_UPLOADED":
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        if errcode == "M_TOO_LARGE":
            raise _too_large()
        logger.info("Remote media request to %s answered %d %s", response.url.host, status, errcode)
        raise _failed()
