"""Finding a request's endpoint in the Starlette route table by dict lookups instead of
Starlette's walk over every route's regex.

Starlette tries its routes in order until one matches, so a request for one of the
last routes in the table (a room's `/send`, `/read_markers`, `/typing`) paid over a
hundred regex matches before its handler started. Here a path without parameters is
one dict lookup, and a path with them is checked only against the routes of its
method and number of segments, by their literal segments.

The answer is always the one Starlette would give: the first route in table order
that matches both path and method. Routes this table cannot express (parameters
that are not whole segments, the `:path` convertor that spans segments, endpoints
that are not plain coroutine functions) are left out; a request that one of them
could have matched before its table-order candidate, like any request without a
candidate, goes to Starlette.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Endpoint = Callable[[Request], Awaitable[Response]]

_PARAMETER = re.compile(r"^\{([a-zA-Z_][a-zA-Z0-9_]*)\}$")


class _Shape(msgspec.Struct, frozen=True):
    """A route whose parameters are each one whole path segment."""

    order: int
    literals: tuple[tuple[int, str], ...]  # (segment index, text) the path must have
    parameters: tuple[tuple[int, str], ...]  # (segment index, parameter name)
    endpoint: Endpoint


class Match(msgspec.Struct, frozen=True):
    endpoint: Endpoint
    path_params: dict[str, str]


class RouteTable:
    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._exact: dict[tuple[str, str], tuple[int, Endpoint]] = {}
        self._shapes: dict[tuple[str, int], list[_Shape]] = {}
        # Routes left to Starlette, with their place in the table and its methods.
        self._others: list[tuple[int, BaseRoute]] = []
        for order, route in enumerate(routes):
            if not self._add(order, route):
                self._others.append((order, route))
        # An exact path that an earlier route with parameters also matches is that
        # route's (Starlette tries them in order).
        for (method, path), (order, _) in list(self._exact.items()):
            shadowing = self._shape_match(method, path)
            if shadowing is not None and shadowing[0] < order:
                del self._exact[(method, path)]

    def _add(self, order: int, route: BaseRoute) -> bool:
        if not isinstance(route, Route) or not inspect.iscoroutinefunction(route.endpoint):
            return False
        # HEAD (which Starlette adds to every GET route) is left to Starlette, which
        # answers it without a body.
        methods = [m for m in route.methods or () if m != "HEAD"]
        if not route.param_convertors:
            for method in methods:
                self._exact.setdefault((method, route.path), (order, route.endpoint))
            return True
        if not all(isinstance(c, StringConvertor) for c in route.param_convertors.values()):
            return False
        literals: list[tuple[int, str]] = []
        parameters: list[tuple[int, str]] = []
        segments = route.path.split("/")
        for index, segment in enumerate(segments):
            parameter = _PARAMETER.match(segment)
            if parameter is not None:
                parameters.append((index, parameter.group(1)))
            elif "{" in segment or "}" in segment:
                return False  # a parameter inside a segment, such as /{name}.json
            else:
                literals.append((index, segment))
        if len(parameters) != len(route.param_convertors):
            return False
        shape = _Shape(order, tuple(literals), tuple(parameters), route.endpoint)
        for method in methods:
            self._shapes.setdefault((method, len(segments)), []).append(shape)
        return True

    def match(self, method: str, path: str) -> Match | None:
        """The endpoint and path parameters Starlette would pick, or None when
        Starlette has to decide (no route here matches, or one of its own might)."""
        exact = self._exact.get((method, path))
        if exact is not None:
            order, endpoint = exact
            found = Match(endpoint, {})
        else:
            found_shape = self._shape_match(method, path)
            if found_shape is None:
                return None
            order, found = found_shape
        for other_order, route in self._others:
            if other_order > order:
                break
            if route.path_regex.match(path) is not None:  # type: ignore[attr-defined]
                return None
        return found

    def _shape_match(self, method: str, path: str) -> tuple[int, Match] | None:
        segments = path.split("/")
        candidates = self._shapes.get((method, len(segments)))
        if candidates is None:
            return None
        for shape in candidates:
            for index, text in shape.literals:
                if segments[index] != text:
                    break
            else:
                values = {name: segments[index] for index, name in shape.parameters}
                # Starlette's string convertor matches one or more characters.
                if all(values.values()):
                    return shape.order, Match(shape.endpoint, values)
        return None
