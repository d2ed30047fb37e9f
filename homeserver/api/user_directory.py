"""POST /user_directory/search (spec: Client-Server API, "User directory").

Finds active local users who share a room with the searcher or are in a public room
(every local user with `user_directory.search_all_users`), matching each word of the
search term as a case-insensitive prefix of a word of their user ID or display name.
Read from the live tables, so profile and membership changes show at once.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from homeserver.auth import require_user
from homeserver.errors import MatrixError
from homeserver.http import Body, json_response, read_model
from storage.user_directory import DirectoryEntry

MAX_LIMIT = 1000
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


class SearchBody(Body):
    search_term: str
    limit: int = 10


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def matches(entry: DirectoryEntry, wanted: list[str]) -> bool:
    own = words(entry.user_id) + words(entry.displayname or "")
    return all(any(word.startswith(w) for word in own) for w in wanted)


def _rank(entry: DirectoryEntry, wanted: list[str], term: str) -> tuple[int, int, str]:
    name = (entry.displayname or "").lower()
    localpart = entry.user_id[1:].split(":", 1)[0].lower()
    exact = 0 if term in (name, localpart) else 1
    return (exact, 0 if entry.shares_room else 1, entry.user_id)


async def search(request: Request) -> Response:
    requester = await require_user(request)
    body = await read_model(request, SearchBody)
    if body.limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    limit = min(body.limit, MAX_LIMIT)
    hs = request.app.state.hs
    wanted = words(body.search_term)
    if not wanted:
        return json_response({"results": [], "limited": False})
    candidates = await hs.user_directory.candidates(
        requester.user_id,
        # SQLite's lower() folds ASCII only: pre-filter on an ASCII word, if any.
        max((w for w in wanted if w.isascii()), key=len, default=""),
        search_all=hs.config.user_directory.search_all_users,
        exclude={hs.notices.system_user},
    )
    term = body.search_term.strip().lower()
    found = sorted((c for c in candidates if matches(c, wanted)), key=lambda c: _rank(c, wanted, term))
    results = []
    for entry in found[:limit]:
        result = {"user_id": entry.user_id, "display_name": entry.displayname}
        if entry.avatar_url:
            result["avatar_url"] = entry.avatar_url
        results.append(result)
    return json_response({"results": results, "limited": len(found) > limit})


def user_directory_routes() -> list[BaseRoute]:
    return [Route("/_matrix/client/v3/user_directory/search", search, methods=["POST"])]
