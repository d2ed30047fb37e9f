"""The route table (homeserver/routing.py) picks what Starlette's router would pick, for
every route of the client API and a spread of paths around them."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import BaseRoute, Match, Route

from homeserver.api.admin import admin_routes
from homeserver.api.room_routes import room_routes
from homeserver.api.routes import client_routes
from homeserver.api.sync_routes import sync_routes
from homeserver.api.user_directory import user_directory_routes
from homeserver.routing import RouteTable

ROUTES: list[BaseRoute] = [
    *client_routes(), *room_routes(), *admin_routes(), *user_directory_routes(), *sync_routes()
]
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
VALUES = ("!room:example.org", "$event", "@alice:example.org", "m.room.member", "sync", "a b", "v3")


def starlette_pick(routes: list[BaseRoute], method: str, path: str) -> tuple[Any, dict[str, Any]] | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return child["endpoint"], child["path_params"]
    return None


def sample_paths(route: Route) -> list[str]:
    """The route's own path with each parameter filled in several ways, and its
    neighbours: a segment more, a segment fewer, an empty parameter."""
    paths = []
    for value in VALUES:
        path = route.path
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value + "/x")
        paths += [path, path + "/extra", path.rsplit("/", 1)[0], path + "/"]
    empty = route.path
    for name in route.param_convertors:
        empty = empty.replace("{" + name + "}", "", 1)
    paths.append(empty)
    return paths


def test_every_route_is_found_as_starlette_finds_it() -> None:
    table = RouteTable(ROUTES)
    found_here = 0
    checked = 0
    for route in ROUTES:
        assert isinstance(route, Route)
        for path in sample_paths(route):
            for method in METHODS:
                expected = starlette_pick(ROUTES, method, path)
                ours = table.match(method, path)
                checked += 1
                if ours is None:
                    # Left to Starlette: only for what no plain route of ours matches.
                    assert method == "HEAD" or expected is None or _left_to_starlette(expected[0]), (method, path)
                    continue
                found_here += 1
                assert expected is not None, (method, path)
                assert (ours.endpoint, ours.path_params) == expected, (method, path)
    # Nearly every real request is answered from the table.
    assert found_here > len(ROUTES) * len(VALUES)
    assert checked > found_here


def _left_to_starlette(endpoint: Any) -> bool:
    return any(isinstance(r, Route) and r.endpoint is endpoint and ":path}" in r.path for r in ROUTES)


async def _endpoint(request: Any) -> Any:
    raise AssertionError("never called")


async def _other(request: Any) -> Any:
    raise AssertionError("never called")


@pytest.mark.parametrize(
    ("routes", "path", "expected"),
    [
        # An earlier route with a parameter wins over a later exact path.
        ([Route("/a/{x}/c", _endpoint), Route("/a/b/c", _other)], "/a/b/c", _endpoint),
        # An earlier exact path wins over a later route with a parameter.
        ([Route("/a/b/c", _other), Route("/a/{x}/c", _endpoint)], "/a/b/c", _other),
        # A `:path` route earlier in the table is Starlette's to match.
        ([Route("/a/{rest:path}", _other), Route("/a/{x}", _endpoint)], "/a/b", None),
        # ... but not for paths it does not match.
        ([Route("/b/{rest:path}", _other), Route("/a/{x}", _endpoint)], "/a/b", _endpoint),
        # Parameters inside a segment are Starlette's.
        ([Route("/a/{x}.json", _other)], "/a/b.json", None),
    ],
)
def test_table_order_decides(routes: list[BaseRoute], path: str, expected: Any) -> None:
    found = RouteTable(routes).match("GET", path)
    assert (found.endpoint if found else None) is expected
    if expected is not None:
        assert starlette_pick(routes, "GET", path)[0] is expected  # type: ignore[index]
