"""Media over federation: our clients get other servers' media (fetched once, cached),
other servers get ours through /_matrix/federation/v1/media — checked against a real
Synapse both ways, and against a scripted peer for redirects, old servers and bad
answers."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from federation.media import (
    MalformedMultipart,
    MultipartReader,
    filename_from_disposition,
    multipart_boundary,
)
from tests.conftest import register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess, free_port
from tests.synapse import SynapseProcess
from tests.test_federation_rooms import SynapseUser
from tests.test_media import (
    download,
    png_bytes,
    split_mxc,
    thumbnail,
    thumbnail_size,
    upload,
)

CLIENT_MEDIA = "/_matrix/client/v1/media"
FED_MEDIA = "/_matrix/federation/v1/media"


def fed_url(server: ServerProcess, path: str) -> str:
    return f"https://127.0.0.1:{server.federation_port}{path}"


def cached_fetches(server: ServerProcess, server_name: str, media_id: str) -> int:
    return server.log().count(f"Fetching remote media mxc://{server_name}/{media_id}")


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """All parts of a multipart answer, with our own reader."""
    boundary = multipart_boundary(content_type)
    assert boundary is not None, content_type

    async def read() -> list[tuple[dict[str, str], bytes]]:
        reader = MultipartReader(_aiter([body]), boundary)
        parts = []
        while (headers := await reader.next_part()) is not None:
            parts.append((headers, await reader.read_part(len(body))))
        return parts

    return asyncio.run(read())


# The reader on its own


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 17, 4096])
@pytest.mark.parametrize("preamble", [b"", b"\r\n", b"ignored preamble\r\n"])
def test_multipart_reader_any_chunking(chunk_size: int, preamble: bytes) -> None:
    # The file holds near-misses of the delimiter, which must pass through as data.
    data = os.urandom(3000) + b"--bound\r\n-\r\n--boun\r\n-bound" + os.urandom(100)
    body = (
        preamble
        + b"--bound\r\nContent-Type: application/json\r\n\r\n{}\r\n"
        + b"--bound  \r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=a.png\r\n\r\n"
        + data
        + b"\r\n--bound--\r\nepilogue"
    )

    async def read() -> tuple[bytes, dict[str, str], bytes, object]:
        chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
        reader = MultipartReader(_aiter(chunks), "bound")
        assert await reader.next_part() == {"content-type": "application/json"}
        metadata = await reader.read_part(100)
        headers = await reader.next_part()
        assert headers is not None
        received = b"".join([c async for c in reader.part_chunks()])
        return metadata, headers, received, await reader.next_part()

    metadata, headers, received, after = asyncio.run(read())
    assert metadata == b"{}" and received == data and after is None
    assert headers["content-disposition"] == "inline; filename=a.png"


def test_multipart_reader_refuses_truncated_and_oversized_input() -> None:
    async def media_part(body: bytes) -> bytes:
        reader = MultipartReader(_aiter([body]), "b")
        await reader.next_part()
        await reader.read_part(100)
        await reader.next_part()
        return b"".join([c async for c in reader.part_chunks()])

    head = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
    assert asyncio.run(media_part(head + b"whole\r\n--b--")) == b"whole"
    with pytest.raises(MalformedMultipart):
        asyncio.run(media_part(head + b"cut off"))
    with pytest.raises(MalformedMultipart):
        asyncio.run(media_part(b"x" * 100_000))  # no delimiter in sight
    with pytest.raises(MalformedMultipart):
        asyncio.run(media_part(b"--b\r\n" + b"X-Long: " + b"y" * 100_000 + b"\r\n\r\n"))


def test_header_parameters() -> None:
    assert multipart_boundary('multipart/mixed; boundary="a b"') == "a b"
    assert multipart_boundary("multipart/mixed;boundary=abc") == "abc"
    assert multipart_boundary("multipart/form-data; boundary=abc") is None
    assert multipart_boundary("multipart/mixed") is None
    assert filename_from_disposition("inline; filename=cat.png") == "cat.png"
    assert filename_from_disposition('attachment; filename="a \\"b\\".txt"') == 'a "b".txt'
    assert filename_from_disposition("attachment; filename=x; filename*=utf-8''%E2%9C%93.txt") == "\u2713.txt"
    assert filename_from_disposition("attachment; filename=../../etc/passwd") == ".._.._etc_passwd"
    assert filename_from_disposition("attachment") is None


# Against a real Synapse


def synapse_upload(bob: SynapseUser, data: bytes, content_type: str, filename: str) -> str:
    response = bob.http.post(
        "/_matrix/media/v3/upload", params={"filename": filename}, content=data, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["content_uri"])


def test_our_users_get_synapse_media_fetched_once(ours: ServerProcess, synapse: SynapseProcess) -> None:
    bob = SynapseUser(synapse)
    image = png_bytes(400, 300)
    uri = synapse_upload(bob, image, "image/png", "picture.png")
    server_name, media_id = split_mxc(uri)
    assert server_name == synapse.server_name
    alice = register_user(ours.base_url)

    got = download(alice.api, uri)
    assert got.status_code == 200, (got.text, ours.log()[-3000:])
    assert got.content == image
    assert got.headers["content-type"] == "image/png"
    assert "picture.png" in got.headers["content-disposition"]
    # Thumbnails are made here from the cached original.
    assert thumbnail_size(thumbnail(alice.api, uri, 96, 96, "crop")) == (96, 96)
    assert thumbnail_size(thumbnail(alice.api, uri, 320, 240, "scale")) == (320, 240)
    again = download(register_user(ours.base_url).api, uri)
    assert again.status_code == 200 and again.content == image

    # One fetch, seen from both sides.
    assert cached_fetches(ours, server_name, media_id) == 1
    assert synapse.log().count(f"{FED_MEDIA}/download/{media_id}") == 1


def test_our_users_get_large_synapse_files_byte_exact(ours: ServerProcess, synapse: SynapseProcess) -> None:
    bob = SynapseUser(synapse)
    data = os.urandom(3 * 1024 * 1024 + 17)
    uri = synapse_upload(bob, data, "application/octet-stream", "blob.bin")
    alice = register_user(ours.base_url)
    got = download(alice.api, uri)
    assert got.status_code == 200, (got.text, ours.log()[-3000:])
    assert got.content == data
    # Not an image: no thumbnail, as for local media.
    refused = thumbnail(alice.api, uri, 32, 32)
    assert (refused.status_code, refused.json()["errcode"]) == (400, "M_UNKNOWN")


def test_synapse_users_get_our_media(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    data = os.urandom(700_000)
    uri = upload(alice.api, data, "application/octet-stream", "notes.bin")
    server_name, media_id = split_mxc(uri)
    bob = SynapseUser(synapse)
    got = bob.http.get(f"{CLIENT_MEDIA}/download/{server_name}/{media_id}")
    assert got.status_code == 200, (got.text, ours.log()[-3000:])
    assert got.content == data

    image = png_bytes(200, 100)
    image_uri = upload(alice.api, image, "image/png", "pic.png")
    _, image_id = split_mxc(image_uri)
    got = bob.http.get(f"{CLIENT_MEDIA}/download/{server_name}/{image_id}")
    assert got.status_code == 200, got.text
    assert got.content == image and got.headers["content-type"] == "image/png"
    small = bob.http.get(
        f"{CLIENT_MEDIA}/thumbnail/{server_name}/{image_id}", params={"width": 32, "height": 32, "method": "crop"}
    )
    assert small.status_code == 200, small.text
    with Image.open(io.BytesIO(small.content)) as thumb:
        assert thumb.size == (32, 32)


def test_unknown_and_unreachable_remote_media(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    missing = download(alice.api, f"mxc://{synapse.server_name}/NoSuchMediaHere")
    assert (missing.status_code, missing.json()["errcode"]) == (404, "M_NOT_FOUND"), missing.text
    missing_thumb = thumbnail(alice.api, f"mxc://{synapse.server_name}/NoSuchMediaHere", 32, 32)
    assert missing_thumb.status_code == 404
    # Nobody listens there: a gateway error, never a 500.
    nobody = download(alice.api, f"mxc://localhost:{free_port()}/abcdef")
    assert (nobody.status_code, nobody.json()["errcode"]) == (502, "M_UNKNOWN"), nobody.text
    # Not a media ID we would ever send on.
    odd = alice.api.get(f"{CLIENT_MEDIA}/download/{synapse.server_name}/bad%20id")
    assert odd.status_code == 404


def test_federation_media_endpoints_need_a_signature(ours: ServerProcess) -> None:
    alice = register_user(ours.base_url)
    _, media_id = split_mxc(upload(alice.api, b"secret", "text/plain"))
    for path in (f"{FED_MEDIA}/download/{media_id}", f"{FED_MEDIA}/thumbnail/{media_id}?width=32&height=32"):
        response = httpx.get(fed_url(ours, path), verify=False)
        assert (response.status_code, response.json()["errcode"]) == (401, "M_UNAUTHORIZED")


# Against a scripted peer


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[FakePeer]:
    fake = FakePeer(tmp_path)
    fake.start()
    yield fake
    fake.stop()


def test_serving_our_media_to_a_signed_peer(ours: ServerProcess, peer: FakePeer) -> None:
    alice = register_user(ours.base_url)
    image = png_bytes(120, 80)
    _, media_id = split_mxc(upload(alice.api, image, "image/png", "ünïcode pic.png"))
    _, text_id = split_mxc(upload(alice.api, b"just text", "text/plain"))

    def get(path: str) -> httpx.Response:
        return peer.request("GET", ours.server_name, ours.federation_port or 0, path)

    got = get(f"{FED_MEDIA}/download/{media_id}")
    assert got.status_code == 200, got.text
    assert int(got.headers["content-length"]) == len(got.content)
    (meta_headers, meta), (headers, content) = parse_multipart(got.headers["content-type"], got.content)
    assert meta_headers == {"content-type": "application/json"} and meta == b"{}"
    assert headers["content-type"] == "image/png" and content == image
    assert filename_from_disposition(headers["content-disposition"]) == "ünïcode pic.png"

    thumb = get(f"{FED_MEDIA}/thumbnail/{media_id}?width=32&height=32&method=crop&animated=false")
    assert thumb.status_code == 200, thumb.text
    _, (thumb_headers, thumb_bytes) = parse_multipart(thumb.headers["content-type"], thumb.content)
    assert thumb_headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(thumb_bytes)) as small:
        assert small.size == (32, 32)

    not_image = get(f"{FED_MEDIA}/thumbnail/{text_id}?width=32&height=32")
    assert (not_image.status_code, not_image.json()["errcode"]) == (400, "M_UNKNOWN")
    no_size = get(f"{FED_MEDIA}/thumbnail/{media_id}")
    assert no_size.status_code == 400
    unknown = get(f"{FED_MEDIA}/download/NoSuchMedia")
    assert (unknown.status_code, unknown.json()["errcode"]) == (404, "M_NOT_FOUND")


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "fakeboundary") -> Response:
    body = b"".join(f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n" for headers, data in parts)
    return Response(body + f"--{boundary}--\r\n".encode(), media_type=f"multipart/mixed; boundary={boundary}")


def test_fetching_follows_redirects_old_servers_and_refuses_bad_answers(ours: ServerProcess, peer: FakePeer) -> None:
    """The peer serves mxc://<peer>/<id> in every way a remote server may."""
    redirected = png_bytes(64, 64)
    legacy = os.urandom(50_000)
    truncated_tries: list[str] = []
    seen_auth: list[str] = []

    async def federation_download(request: Request) -> Response:
        seen_auth.append(request.headers.get("authorization", ""))
        media_id = request.path_params["media_id"]
        json_part = ("Content-Type: application/json", b"{}")
        if media_id == "redirected":
            location = f"https://localhost:{peer.port}/cdn/picture"
            return _multipart([json_part, (f"Location: {location}", b"")])
        if media_id == "truncated":
            truncated_tries.append(media_id)
            head = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            return Response(head + b"half a fi", media_type="multipart/mixed; boundary=b")
        if media_id == "notmultipart":
            return Response(b"raw bytes", media_type="application/octet-stream")
        if media_id == "broken":
            return Response(b"oops", status_code=500)
        if media_id == "old":
            return JSONResponse({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, status_code=404)
        return JSONResponse({"errcode": "M_NOT_FOUND", "error": "Not found"}, status_code=404)

    async def cdn(request: Request) -> Response:
        return Response(redirected, media_type="image/png", headers={"Content-Disposition": "inline; filename=cdn.png"})

    async def legacy_download(request: Request) -> Response:
        if request.query_params.get("allow_remote") != "false":
            return JSONResponse({"errcode": "M_FORBIDDEN", "error": "allow_remote"}, status_code=403)
        return Response(legacy, media_type="application/pdf", headers={"Content-Disposition": "attachment; filename=old.pdf"})

    peer.server.config.app.router.routes.extend(
        [
            Route(f"{FED_MEDIA}/download/{{media_id}}", federation_download),
            Route("/cdn/picture", cdn),
            Route("/_matrix/media/v3/download/{server_name}/{media_id}", legacy_download),
        ]
    )
    alice = register_user(ours.base_url)

    got = download(alice.api, f"mxc://{peer.server_name}/redirected")
    assert got.status_code == 200, (got.text, ours.log()[-3000:])
    assert got.content == redirected and got.headers["content-type"] == "image/png"
    assert "cdn.png" in got.headers["content-disposition"]
    assert thumbnail_size(thumbnail(alice.api, f"mxc://{peer.server_name}/redirected", 32, 32, "crop")) == (32, 32)
    assert seen_auth and all(re.match(r'X-Matrix origin="[^"]+",destination="' + re.escape(peer.server_name), a) for a in seen_auth)

    old = download(alice.api, f"mxc://{peer.server_name}/old")
    assert old.status_code == 200, (old.text, ours.log()[-3000:])
    assert old.content == legacy and old.headers["content-type"] == "application/pdf"
    assert "old.pdf" in old.headers["content-disposition"]

    before = {p for p in (ours.directory / "data" / "media").rglob("*") if p.is_file()}
    for media_id in ("truncated", "notmultipart", "broken"):
        bad = download(alice.api, f"mxc://{peer.server_name}/{media_id}")
        assert (bad.status_code, bad.json()["errcode"]) == (502, "M_UNKNOWN"), (media_id, bad.text)
    # A truncated file is never kept: the next request asks again.
    assert download(alice.api, f"mxc://{peer.server_name}/truncated").status_code == 502
    assert len(truncated_tries) == 2
    after = {p for p in (ours.directory / "data" / "media").rglob("*") if p.is_file()}
    assert after == before

    gone = download(alice.api, f"mxc://{peer.server_name}/missing")
    assert (gone.status_code, gone.json()["errcode"]) == (404, "M_NOT_FOUND")


def test_remote_media_over_the_size_limit_is_refused(tmp_path: Path, peer: FakePeer) -> None:
    big = os.urandom(200_000)

    async def federation_download(request: Request) -> Response:
        # No Content-Length to refuse early on: the limit is enforced while streaming.
        async def body() -> AsyncIterator[bytes]:
            yield b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            for start in range(0, len(big), 10_000):
                yield big[start : start + 10_000]
            yield b"\r\n--b--\r\n"

        return StreamingResponse(body(), media_type="multipart/mixed; boundary=b")

    peer.server.config.app.router.routes.append(Route(f"{FED_MEDIA}/download/{{media_id}}", federation_download))
    (tmp_path / "small").mkdir()
    server = ServerProcess(tmp_path / "small", {"limits": {"max_upload_bytes": 100_000}}, federation=True)
    server.start()
    try:
        alice = register_user(server.base_url)
        refused = download(alice.api, f"mxc://{peer.server_name}/big")
        assert (refused.status_code, refused.json()["errcode"]) == (502, "M_TOO_LARGE"), refused.text
        assert not [p for p in (server.directory / "data" / "media").rglob("*") if p.is_file()]
    finally:
        server.stop()
