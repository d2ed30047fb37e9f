"""A hand-driven federation peer for hostile-input tests: it publishes a signing key
over TLS like a real server, and the test signs whatever PDUs and requests it likes."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from federation.keys import server_keys_response
from federation.request_auth import authorization_header
from homeserver.config_generate import write_self_signed_certificate
from homeserver.events import build_event, generate_signing_key, get_room_version
from tests.server import free_port


class FakePeer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.server_name = f"localhost:{self.port}"
        self.signing_key = generate_signing_key("a_fake")
        cert, key = directory / "peer.crt", directory / "peer.key"
        write_self_signed_certificate(cert, key, "localhost")

        async def keys(request: Request) -> JSONResponse:
            return JSONResponse(server_keys_response(self.server_name, self.signing_key, int(time.time() * 1000)))

        app = Starlette(routes=[Route("/_matrix/key/v2/server", keys)])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def request(self, method: str, destination: str, port: int, path: str, content: Any | None = None) -> httpx.Response:
        header = authorization_header(method, path, self.server_name, destination, content, self.signing_key)
        return httpx.request(
            method, f"https://127.0.0.1:{port}{path}", json=content, headers={"Authorization": header}, verify=False, timeout=30
        )

    def sign_event(self, room_version: str, template: dict[str, Any], **changes: Any) -> tuple[str, dict[str, Any]]:
        fields = {**template, **changes}
        return build_event(
            get_room_version(room_version),
            room_id=fields["room_id"],
            sender=fields["sender"],
            event_type=fields["type"],
            state_key=fields.get("state_key"),
            content=fields["content"],
            prev_event_ids=fields["prev_events"],
            auth_event_ids=fields["auth_events"],
            depth=fields["depth"],
            origin_server_ts=int(time.time() * 1000),
            server_name=self.server_name,
            signing_key=self.signing_key,
        )
