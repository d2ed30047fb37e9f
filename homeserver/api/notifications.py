"""GET /notifications (spec: Client-Server API, "Push notifications"): the events
push rules notified the user about, newest first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import require_user
from homeserver.errors import invalid_param
from homeserver.http import json_response, query_int
from homeserver.rooms.reading import Reader

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


async def get_notifications(request: Request) -> Response:
    requester = await require_user(request)
    hs = request.app.state.hs
    raw_from = request.query_params.get("from")
    before: int | None = None
    if raw_from:
        # next_token is the stream position of the last notification returned.
        if not raw_from.isdigit() or len(raw_from) > 18:
            raise invalid_param("'from' is not a token this server gave out")
        before = int(raw_from)
    limit = query_int(request, "limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
    if limit < 1:
        raise invalid_param("'limit' must be positive")
    limit = min(limit, MAX_LIMIT)
    only = request.query_params.get("only")
    newest = hs.events.positions.last + 1
    before = newest if before is None else min(before, newest)
    # One window of positions per page (see storage/push_actions.py): a page may hold
    # fewer than `limit`, even none, and still have a next_token.
    rows, lowest = await hs.push_actions.store.notifications(requester.user_id, before, limit, only == "highlight")
    found = await hs.events.get_events([row.event_id for row, _ in rows])
    events = await hs.room_reader.serialize(
        Reader(requester.user_id, requester.device_id), [found[r.event_id] for r, _ in rows if r.event_id in found],
        include_room_id=False,
    )
    by_id = {e["event_id"]: e for e in events}
    notifications = [
        {"actions": row.actions, "event": by_id[row.event_id], "read": read, "room_id": row.room_id, "ts": row.ts}
        for row, read in rows
        if row.event_id in by_id
    ]
    body: dict[str, object] = {"notifications": notifications}
    if len(rows) == limit:
        body["next_token"] = str(rows[-1][0].stream_ordering)
    elif lowest > 0:
        body["next_token"] = str(lowest)
    return json_response(body)
