"""The content repository over HTTP: uploads through a real client (matrix-nio),
byte-exact downloads, thumbnails, safe serving headers, and hostile input.

Test files are generated here (Pillow images, a hand-built Ogg/Opus clip, random
bytes); nothing binary is committed.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from nio import AsyncClient, DownloadError, LoginResponse, ResizingMethod, ThumbnailResponse, UploadResponse
from PIL import Image

from tests.conftest import Api, User, register_user
from tests.server import ServerProcess

CLIENT_MEDIA = "/_matrix/client/v1/media"
MEDIA_V3 = "/_matrix/media/v3"
MEDIA_V1 = "/_matrix/media/v1"
SPEC_CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)


# Generated test files


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height))
    # A gradient, so resizing has real work to do and the thumbnail is not trivial.
    image.putdata([((x * 255) // width, (y * 255) // height, 128)[: len(mode)] for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(width: int, height: int, orientation: int | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    out = io.BytesIO()
    if orientation is None:
        image.save(out, "JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def _ogg_crc(data: bytes) -> int:
    # Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0, no final xor.
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def _ogg_page(header_type: int, granule: int, serial: int, sequence: int, packets: list[bytes]) -> bytes:
    lacing = bytearray()
    for packet in packets:
        length = len(packet)
        while length >= 255:
            lacing.append(255)
            length -= 255
        lacing.append(length)
    header = b"OggS" + struct.pack("<BBqIII", 0, header_type, granule, serial, sequence, 0) + bytes([len(lacing)]) + lacing
    page = header + b"".join(packets)
    crc = _ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def ogg_opus_voice_clip(seconds: int = 1) -> bytes:
    """A valid Ogg/Opus stream (RFC 7845): OpusHead, OpusTags, then 20 ms CELT
    silence frames; what a voice message is made of."""
    serial = 0x5EED
    pre_skip = 312
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)
    vendor = b"homeserver-tests"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    frames = [b"\xf8\xff\xfe"] * (50 * seconds)  # TOC: CELT FB 20 ms mono; silence
    return (
        _ogg_page(0x02, 0, serial, 0, [head])
        + _ogg_page(0x00, 0, serial, 1, [tags])
        + _ogg_page(0x04, pre_skip + 960 * len(frames), serial, 2, frames)
    )


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG declaring a huge image: decoding it would need width*height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    compressor = zlib.compressobj(9)
    # Only the first rows' worth of data: the header alone is the attack.
    idat = compressor.compress(b"\x00" * (width + 1) * 4) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def real_bomb_png(side: int = 10_000) -> bytes:
    """A complete, valid PNG of side x side black pixels (100 megapixels), ~100 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# Helpers


def media_files(server: ServerProcess) -> set[Path]:
    """Every file in the server's media directory (content store and temp files)."""
    root = server.directory / "data" / "media"
    return {p for p in root.rglob("*") if p.is_file()}


def split_mxc(uri: str) -> tuple[str, str]:
    assert uri.startswith("mxc://")
    server_name, media_id = uri[len("mxc://") :].split("/")
    return server_name, media_id


def upload(api: Api, data: bytes, content_type: str = "application/octet-stream", filename: str | None = None) -> str:
    params = {"filename": filename} if filename is not None else {}
    response = api.post(f"{MEDIA_V3}/upload", params=params, content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    return str(response.json()["content_uri"])


def download(api: Api, uri: str, filename: str | None = None, **params: Any) -> httpx.Response:
    server_name, media_id = split_mxc(uri)
    path = f"{CLIENT_MEDIA}/download/{server_name}/{media_id}" + (f"/{filename}" if filename else "")
    return api.get(path, params=params)


def thumbnail(api: Api, uri: str, width: Any, height: Any, method: str | None = "scale", **params: Any) -> httpx.Response:
    server_name, media_id = split_mxc(uri)
    query = {"width": width, "height": height, **params}
    if method is not None:
        query["method"] = method
    return api.get(f"{CLIENT_MEDIA}/thumbnail/{server_name}/{media_id}", params=query)


def thumbnail_size(response: httpx.Response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        return image.size


def assert_error(response: httpx.Response, status: int, errcode: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["errcode"] == errcode, response.text


async def nio_client(server: ServerProcess, user: User) -> AsyncClient:
    client = AsyncClient(server.base_url, user.user_id)
    login = await client.login(user.password)
    assert isinstance(login, LoginResponse), login
    return client


# Uploads and downloads through a real client


async def test_nio_uploads_and_downloads_byte_exact(server: ServerProcess, user: User, tmp_path: Path) -> None:
    big = tmp_path / "archive.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    files: list[tuple[str, str, bytes | Path]] = [
        ("picture.png", "image/png", png_bytes(64, 48)),
        ("photo.jpg", "image/jpeg", jpeg_bytes(120, 80)),
        ("voice-message.ogg", "audio/ogg", ogg_opus_voice_clip()),
        ("archive.bin", "application/octet-stream", big),
    ]
    client = await nio_client(server, user)
    try:
        for filename, content_type, source in files:
            if isinstance(source, Path):
                expected_hash = hashlib.sha256(source.read_bytes()).hexdigest()
                with source.open("rb") as f:
                    uploaded, _ = await client.upload(
                        f, content_type=content_type, filename=filename, filesize=source.stat().st_size
                    )
            else:
                expected_hash = hashlib.sha256(source).hexdigest()
                uploaded, _ = await client.upload(
                    io.BytesIO(source), content_type=content_type, filename=filename, filesize=len(source)
                )
            assert isinstance(uploaded, UploadResponse), uploaded
            assert uploaded.content_uri.startswith(f"mxc://{server.server_name}/")

            got = await client.download(mxc=uploaded.content_uri)
            assert not isinstance(got, DownloadError), got
            assert hashlib.sha256(got.body).hexdigest() == expected_hash, filename
            assert got.content_type == content_type
            assert got.filename == filename

            # The path's file name overrides the uploaded one.
            renamed = await client.download(mxc=uploaded.content_uri, filename="renamed file.dat")
            assert not isinstance(renamed, DownloadError), renamed
            assert renamed.filename == "renamed file.dat"

            if content_type.startswith("image/"):
                server_name, media_id = split_mxc(uploaded.content_uri)
                thumb = await client.thumbnail(server_name, media_id, 32, 32, ResizingMethod.crop)
                assert isinstance(thumb, ThumbnailResponse), thumb
                assert thumb.content_type == content_type  # PNG stays PNG, JPEG stays JPEG
                with Image.open(io.BytesIO(thumb.body)) as image:
                    assert image.size == (32, 32)
    finally:
        await client.close()


def test_download_headers_are_safe(user: User, api: Api) -> None:
    png = png_bytes(8, 8)
    uri = upload(user.api, png, "image/png", "cat.png")
    response = download(user.api, uri)
    assert response.content == png
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == "inline; filename=cat.png"
    assert response.headers["content-security-policy"] == SPEC_CSP
    assert response.headers["x-content-type-options"] == "nosniff"

    # Anything a browser could run is an attachment, with its type kept as uploaded.
    html = b"<script>alert(document.cookie)</script>"
    uri = upload(user.api, html, "text/html", "page.html")
    response = download(user.api, uri)
    assert response.content == html
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-disposition"] == "attachment; filename=page.html"
    assert response.headers["content-security-policy"] == SPEC_CSP
    svg = upload(user.api, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "x.svg")
    assert download(user.api, svg).headers["content-disposition"].startswith("attachment")

    # No Content-Type: octet-stream (spec default); no filename: none in the header.
    response = user.api.post(f"{MEDIA_V3}/upload", content=b"raw")
    uri = response.json()["content_uri"]
    response = download(user.api, uri)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment"


def test_filenames_are_sanitised_and_encoded(user: User) -> None:
    cases = {
        "War and Peace.pdf": 'attachment; filename="War and Peace.pdf"',
        "Grüße 🎉.txt": "inline; filename*=utf-8''Gr%C3%BC%C3%9Fe%20%F0%9F%8E%89.txt",
        'quote"and\\back.txt': "inline; filename*=utf-8''quote%22and_back.txt",
        "../../etc/passwd": "attachment; filename=.._.._etc_passwd",
        "line\r\nbreak.txt": "inline; filename=linebreak.txt",
        "100%.txt": "inline; filename*=utf-8''100%25.txt",
    }
    for name, expected in cases.items():
        content_type = "application/pdf" if name.endswith(".pdf") else "text/plain"
        if name.endswith("passwd"):
            content_type = "application/octet-stream"
        uri = upload(user.api, b"x", content_type, name)
        assert download(user.api, uri).headers["content-disposition"] == expected, name


def test_legacy_download_is_unauthenticated_and_switchable(
    user: User, api: Api, make_server: Callable[..., ServerProcess]
) -> None:
    data = b"legacy clients still exist"
    uri = upload(user.api, data, "text/plain", "note.txt")
    server_name, media_id = split_mxc(uri)
    response = api.get(f"{MEDIA_V3}/download/{server_name}/{media_id}")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-disposition"] == "inline; filename=note.txt"
    response = api.get(f"{MEDIA_V3}/download/{server_name}/{media_id}/other.txt")
    assert response.headers["content-disposition"] == "inline; filename=other.txt"

    frozen = make_server({"media": {"enable_legacy_endpoints": False}})
    frozen_user = register_user(frozen.base_url)
    uri = upload(frozen_user.api, data, "text/plain")
    server_name, media_id = split_mxc(uri)
    with Api(frozen.base_url) as anonymous:
        assert_error(anonymous.get(f"{MEDIA_V3}/download/{server_name}/{media_id}"), 404, "M_NOT_FOUND")
        response = anonymous.get(
            f"{MEDIA_V3}/thumbnail/{server_name}/{media_id}", params={"width": 32, "height": 32}
        )
        assert_error(response, 404, "M_NOT_FOUND")
    assert_error(frozen_user.api.get(f"{MEDIA_V3}/config"), 404, "M_NOT_FOUND")
    assert download(frozen_user.api, uri).content == data
    assert frozen_user.api.get(f"{CLIENT_MEDIA}/config").status_code == 200


def test_config_and_preview_url(user: User) -> None:
    assert user.api.get(f"{CLIENT_MEDIA}/config").json() == {"m.upload.size": 52428800}
    assert user.api.get(f"{MEDIA_V3}/config").json() == {"m.upload.size": 52428800}
    response = user.api.get(f"{CLIENT_MEDIA}/preview_url", params={"url": "https://matrix.org"})
    assert_error(response, 403, "M_FORBIDDEN")
    assert "disabled" in response.json()["error"]


# Create, then upload


def test_create_then_upload(server: ServerProcess, user: User, new_user: Callable[..., User]) -> None:
    created = user.api.post(f"{MEDIA_V1}/create")
    assert created.status_code == 200, created.text
    body = created.json()
    uri = body["content_uri"]
    assert body["unused_expires_at"] > time.time() * 1000 + 23 * 3600 * 1000
    server_name, media_id = split_mxc(uri)

    # Not uploaded yet: download waits up to timeout_ms, then 504.
    assert_error(download(user.api, uri, timeout_ms=100), 504, "M_NOT_YET_UPLOADED")

    # Only the creator may upload.
    other = new_user()
    response = other.api.put(f"{MEDIA_V3}/upload/{server_name}/{media_id}", content=b"mine")
    assert_error(response, 403, "M_FORBIDDEN")

    # A download that is already waiting gets the content as soon as it arrives.
    data = ogg_opus_voice_clip(2)
    waited: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: waited.append(download(user.api, uri, timeout_ms=15000)))
    waiter.start()
    time.sleep(0.3)
    response = user.api.put(
        f"{MEDIA_V3}/upload/{server_name}/{media_id}",
        params={"filename": "voice.ogg"},
        content=data,
        headers={"Content-Type": "audio/ogg"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    waiter.join(15)
    assert waited and waited[0].status_code == 200 and waited[0].content == data
    assert waited[0].headers["content-disposition"] == "inline; filename=voice.ogg"

    # Once only.
    again = user.api.put(f"{MEDIA_V3}/upload/{server_name}/{media_id}", content=b"again")
    assert_error(again, 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert download(user.api, uri).content == data

    # Ranges work (seeking in a voice message or video).
    partial = user.api.get(
        f"{CLIENT_MEDIA}/download/{server_name}/{media_id}", headers={"Range": "bytes=0-3"}
    )
    assert partial.status_code == 206 and partial.content == data[:4] == b"OggS"

    # IDs that were never created.
    response = user.api.put(f"{MEDIA_V3}/upload/{server_name}/neverCreated", content=b"x")
    assert_error(response, 404, "M_NOT_FOUND")
    response = user.api.put(f"{MEDIA_V3}/upload/other.example/{media_id}", content=b"x")
    assert_error(response, 404, "M_NOT_FOUND")


def test_pending_media_ids_are_limited(new_user: Callable[..., User]) -> None:
    user = new_user()
    for _ in range(20):
        assert user.api.post(f"{MEDIA_V1}/create").status_code == 200
    assert_error(user.api.post(f"{MEDIA_V1}/create"), 429, "M_LIMIT_EXCEEDED")
    # Other users are not affected.
    assert new_user().api.post(f"{MEDIA_V1}/create").status_code == 200


# Thumbnails


def test_thumbnails_have_exact_sizes(user: User) -> None:
    uri = upload(user.api, png_bytes(1024, 512), "image/png", "wide.png")
    # Pre-generated sizes.
    assert thumbnail_size(thumbnail(user.api, uri, 32, 32, "crop")) == (32, 32)
    assert thumbnail_size(thumbnail(user.api, uri, 96, 96, "crop")) == (96, 96)
    assert thumbnail_size(thumbnail(user.api, uri, 320, 240, "scale")) == (320, 160)
    assert thumbnail_size(thumbnail(user.api, uri, 640, 480, "scale")) == (640, 320)
    assert thumbnail_size(thumbnail(user.api, uri, 800, 600, "scale")) == (800, 400)
    # The smallest pre-generated size at least as large as asked.
    assert thumbnail_size(thumbnail(user.api, uri, 50, 40, "crop")) == (96, 96)
    assert thumbnail_size(thumbnail(user.api, uri, 100, 100, "scale")) == (320, 160)
    assert thumbnail_size(thumbnail(user.api, uri, 321, 100, "scale")) == (640, 320)
    # Larger than every pre-generated size: made to measure, but never upscaled.
    assert thumbnail_size(thumbnail(user.api, uri, 200, 150, "crop")) == (200, 150)
    assert thumbnail_size(thumbnail(user.api, uri, 1600, 1200, "scale")) == (1024, 512)
    assert thumbnail_size(thumbnail(user.api, uri, 2000, 300, "crop")) == (1024, 154)
    # method defaults to scale.
    assert thumbnail_size(thumbnail(user.api, uri, 320, 240, None)) == (320, 160)

    response = thumbnail(user.api, uri, 32, 32, "crop")
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == "inline; filename=thumbnail.png"
    assert response.headers["x-content-type-options"] == "nosniff"
    # animated=true on a still image behaves as animated=false.
    assert thumbnail_size(thumbnail(user.api, uri, 32, 32, "crop", animated="true")) == (32, 32)


def test_jpeg_thumbnails_are_jpeg_and_upright(user: User, api: Api) -> None:
    uri = upload(user.api, jpeg_bytes(2000, 1500), "image/jpeg", "photo.jpg")
    response = thumbnail(user.api, uri, 320, 240, "scale")
    assert response.headers["content-type"] == "image/jpeg"
    assert thumbnail_size(response) == (320, 240)
    assert thumbnail_size(thumbnail(user.api, uri, 96, 96, "crop")) == (96, 96)
    # A phone photo stored sideways (EXIF orientation 6) is thumbnailed as shown.
    uri = upload(user.api, jpeg_bytes(400, 200, orientation=6), "image/jpeg", "sideways.jpg")
    assert thumbnail_size(thumbnail(user.api, uri, 320, 240, "scale")) == (120, 240)
    # Legacy thumbnails need no login.
    server_name, media_id = split_mxc(uri)
    legacy = api.get(f"{MEDIA_V3}/thumbnail/{server_name}/{media_id}", params={"width": 32, "height": 32, "method": "crop"})
    assert thumbnail_size(legacy) == (32, 32)


def test_small_images_are_not_upscaled(user: User) -> None:
    uri = upload(user.api, png_bytes(20, 10, "RGBA"), "image/png")
    assert thumbnail_size(thumbnail(user.api, uri, 32, 32, "crop")) == (10, 10)
    assert thumbnail_size(thumbnail(user.api, uri, 320, 240, "scale")) == (20, 10)


def test_thumbnail_bad_requests(server: ServerProcess, user: User) -> None:
    uri = upload(user.api, png_bytes(64, 64), "image/png")
    for width, height in [("abc", 32), (32, "1.5"), (0, 32), (32, -1)]:
        assert_error(thumbnail(user.api, uri, width, height), 400, "M_INVALID_PARAM")
    assert_error(thumbnail(user.api, uri, 32, 32, "stretch"), 400, "M_INVALID_PARAM")
    server_name, media_id = split_mxc(uri)
    missing = user.api.get(f"{CLIENT_MEDIA}/thumbnail/{server_name}/{media_id}", params={"width": 32})
    assert_error(missing, 400, "M_MISSING_PARAM")

    # Not an image: the spec's 400 "cannot generate thumbnails".
    voice = upload(user.api, ogg_opus_voice_clip(), "audio/ogg", "voice.ogg")
    assert_error(thumbnail(user.api, voice, 32, 32), 400, "M_UNKNOWN")

    # Unknown, and remote (no federation yet): 404.
    unknown = f"mxc://{server.server_name}/doesNotExist123"
    assert_error(thumbnail(user.api, unknown, 32, 32), 404, "M_NOT_FOUND")
    assert_error(download(user.api, unknown), 404, "M_NOT_FOUND")
    assert_error(download(user.api, "mxc://remote.example/abcdef"), 404, "M_NOT_FOUND")
    assert_error(thumbnail(user.api, "mxc://remote.example/abcdef", 32, 32), 404, "M_NOT_FOUND")


# Bad input


def test_authentication_is_required(server: ServerProcess, user: User, api: Api) -> None:
    uri = upload(user.api, b"secret", "text/plain")
    server_name, media_id = split_mxc(uri)
    before = media_files(server)
    cases = [
        ("GET", f"{CLIENT_MEDIA}/download/{server_name}/{media_id}"),
        ("GET", f"{CLIENT_MEDIA}/download/{server_name}/{media_id}/x.txt"),
        ("GET", f"{CLIENT_MEDIA}/thumbnail/{server_name}/{media_id}?width=32&height=32"),
        ("GET", f"{CLIENT_MEDIA}/config"),
        ("GET", f"{CLIENT_MEDIA}/preview_url?url=https://matrix.org"),
        ("POST", f"{MEDIA_V3}/upload"),
        ("POST", f"{MEDIA_V1}/create"),
        ("PUT", f"{MEDIA_V3}/upload/{server_name}/{media_id}"),
    ]
    for method, path in cases:
        content = b"new content" if method in ("POST", "PUT") else None
        assert_error(api.request(method, path, content=content), 401, "M_MISSING_TOKEN")
        wrong = api.request(method, path, content=content, headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, "M_UNKNOWN_TOKEN")
    assert media_files(server) == before


def test_oversized_uploads_are_refused_and_leave_nothing(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server({"limits": {"max_upload_bytes": 4096}})
    user = register_user(server.base_url)
    assert user.api.get(f"{CLIENT_MEDIA}/config").json() == {"m.upload.size": 4096}
    before = media_files(server)

    # Refused from Content-Length, before any byte is read.
    response = user.api.post(f"{MEDIA_V3}/upload", content=b"x" * 5000)
    assert_error(response, 413, "M_TOO_LARGE")

    # No Content-Length (chunked): refused while streaming, once past the limit.
    def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 1000

    response = user.api.post(f"{MEDIA_V3}/upload", content=chunks())
    assert_error(response, 413, "M_TOO_LARGE")

    created = user.api.post(f"{MEDIA_V1}/create").json()["content_uri"]
    server_name, media_id = split_mxc(created)
    response = user.api.put(f"{MEDIA_V3}/upload/{server_name}/{media_id}", content=b"z" * 4097)
    assert_error(response, 413, "M_TOO_LARGE")
    assert media_files(server) == before

    # Exactly at the limit is fine, and the created ID is still usable.
    assert download(user.api, upload(user.api, b"a" * 4096)).content == b"a" * 4096
    response = user.api.put(f"{MEDIA_V3}/upload/{server_name}/{media_id}", content=b"b" * 4096)
    assert response.status_code == 200, response.text
    assert download(user.api, created).content == b"b" * 4096


def test_aborted_upload_leaves_nothing(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    user = register_user(server.base_url)
    before = media_files(server)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST {MEDIA_V3}/upload?filename=half.bin HTTP/1.1\r\n"
            f"Host: {server.server_name}\r\n"
            f"Authorization: Bearer {user.access_token}\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Length: 10000000\r\n\r\n".encode()
        )
        sock.sendall(os.urandom(3_000_000))
    # The server notices the disconnect and cleans up.
    deadline = time.monotonic() + 10
    while media_files(server) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert media_files(server) == before, (media_files(server) - before, server.log()[-4000:])
    # And it is still serving.
    assert download(user.api, upload(user.api, b"after")).content == b"after"
    assert "Traceback" not in server.log()


def test_broken_image_is_a_file_without_thumbnails(server: ServerProcess, user: User) -> None:
    before = media_files(server)
    broken = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    uri = upload(user.api, broken, "image/png", "broken.png")
    assert download(user.api, uri).content == broken
    assert_error(thumbnail(user.api, uri, 32, 32, "crop"), 400, "M_UNKNOWN")
    assert_error(thumbnail(user.api, uri, 800, 600, "scale"), 400, "M_UNKNOWN")
    # A truncated real PNG: the header is fine, the pixels are not.
    whole = png_bytes(300, 300)
    truncated = whole[: len(whole) // 2]
    uri2 = upload(user.api, truncated, "image/png", "truncated.png")
    assert_error(thumbnail(user.api, uri2, 96, 96, "crop"), 400, "M_UNKNOWN")
    # Only the two uploads themselves were stored.
    assert len(media_files(server) - before) == 2


def test_decompression_bombs_are_never_decoded(server: ServerProcess, user: User) -> None:
    before = media_files(server)
    for bomb in (bomb_png(), real_bomb_png()):
        uri = upload(user.api, bomb, "image/png", "bomb.png")
        # Stored as the file it is...
        assert download(user.api, uri).content == bomb
        # ...but never thumbnailed.
        assert_error(thumbnail(user.api, uri, 32, 32, "crop"), 413, "M_TOO_LARGE")
        assert_error(thumbnail(user.api, uri, 800, 600, "scale"), 413, "M_TOO_LARGE")
    assert len(media_files(server) - before) == 2
    assert user.api.get("/_matrix/client/v3/account/whoami").status_code == 200


def test_identical_content_is_stored_once(server: ServerProcess, user: User, new_user: Callable[..., User]) -> None:
    before = media_files(server)
    data = os.urandom(100_000)
    first = upload(user.api, data, "application/octet-stream", "one.bin")
    second = upload(new_user().api, data, "application/zip", "two.zip")
    assert first != second
    assert len(media_files(server) - before) == 1
    one, two = download(user.api, first), download(user.api, second)
    assert one.content == two.content == data
    assert one.headers["content-disposition"] == "attachment; filename=one.bin"
    assert two.headers["content-type"] == "application/zip"
    assert two.headers["content-disposition"] == "attachment; filename=two.zip"


def test_identical_images_share_thumbnails(server: ServerProcess, user: User) -> None:
    image = png_bytes(1000, 900)
    before = media_files(server)
    first = upload(user.api, image, "image/png")
    after_first = media_files(server)
    # The image and its five pre-generated thumbnails.
    assert len(after_first - before) == 6
    second = upload(user.api, image, "image/png")
    assert media_files(server) == after_first
    assert thumbnail(user.api, first, 96, 96, "crop").content == thumbnail(user.api, second, 96, 96, "crop").content


@pytest.mark.parametrize("content_type", ["", "not a type", "text/plain\u00e9", "x" * 300 + "/y"])
def test_odd_content_types_become_octet_stream(user: User, content_type: str) -> None:
    response = user.api.post(
        f"{MEDIA_V3}/upload", content=b"data", headers={"Content-Type": content_type.encode("utf-8")}  # type: ignore[dict-item]
    )
    assert response.status_code == 200, response.text
    downloaded = download(user.api, response.json()["content_uri"])
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert downloaded.headers["content-disposition"] == "attachment"


def test_no_request_above_failed_with_a_server_error(server: ServerProcess) -> None:
    # Bad input is a Matrix error, never a 500 (which the server logs as unhandled).
    assert "Unhandled error" not in server.log()
    assert "Traceback" not in server.log()
