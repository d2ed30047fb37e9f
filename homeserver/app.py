"""The ASGI application: routes, CORS, and the one place errors become Matrix errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homeserver.api.admin import admin_routes
from homeserver.api.room_routes import room_routes
from homeserver.api.sync_routes import sync_routes
from homeserver.api.routes import client_routes
from homeserver.api.user_directory import user_directory_routes
from homeserver.errors import MatrixError
from homeserver.homeserver import HomeServer
from homeserver.http import json_response
from homeserver.routing import RouteTable

logger = logging.getLogger(__name__)

CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"X-Requested-With, Content-Type, Authorization"),
]


class CorsMiddleware:
    """Browser clients (Element Web) need these on every response, and OPTIONS answered
    on every path without authentication (spec: "Web Browser Clients")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": CORS_HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *CORS_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _matrix_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MatrixError)
    return json_response(exc.body(), exc.status, headers=exc.headers or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        return json_response({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, exc.status_code)
    return json_response({"errcode": "M_UNKNOWN", "error": str(exc.detail)}, exc.status_code)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response({"errcode": "M_UNKNOWN", "error": "Internal server error"}, 500)


EXCEPTION_HANDLERS = {
    MatrixError: _matrix_error,
    HTTPException: _http_error,
    Exception: _unexpected_error,
}


def build_federation_app(hs: HomeServer) -> ASGIApp:
    from federation.app import build_federation_app as build

    return build(hs, EXCEPTION_HANDLERS, CorsMiddleware)


class FastRoutes:
    """Requests for the client API's routes, answered without passing through
    Starlette's layers; what the route table cannot place goes on to `app`.

    Between uvicorn and a handler Starlette stacks about ten coroutines (its error
    and exception middleware, the router, the route, the request/response adapter)
    and a wrapper around `send` at three of them, and its router tries every route's
    regex in turn. A waiting /sync long-poll holds all of that for as long as it
    waits (about a third of the memory each one costs), and every request paid for
    it: a room's `/send` matched over a hundred regexes first. The table comes from
    the Starlette app's own routes (homeserver/routing.py) and errors take the same
    exception handlers, so the answers are the same either way.
    """

    def __init__(self, app: Starlette, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner
        self.table = RouteTable(app.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            self.table.match(scope["method"], scope["path"])
            if scope["type"] == "http" and not scope.get("root_path")
            else None
        )
        if found is None:
            await self.inner(scope, receive, send)
            return
        scope["app"] = self.app
        scope["path_params"] = found.path_params
        request = Request(scope, receive, send)
        try:
            response = await found.endpoint(request)
        except Exception as exc:
            response = await _exception_handler(exc)(request, exc)
        response.raw_headers.extend(CORS_HEADERS)
        await response(scope, receive, send)


def _exception_handler(exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]]:
    for cls in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)  # type: ignore[call-overload]
        if handler is not None:
            return handler  # type: ignore[no-any-return]
    return _unexpected_error


def build_app(hs: HomeServer) -> ASGIApp:
    app = Starlette(
        routes=[*client_routes(), *room_routes(), *admin_routes(), *user_directory_routes(), *sync_routes()],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.hs = hs
    return FastRoutes(app, CorsMiddleware(app))
