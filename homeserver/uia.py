"""User-Interactive Authentication (spec: Client-Server API, "User-Interactive
Authentication API").

A guarded request without `auth` gets 401 with the flows and a new session. Each
follow-up request carries `auth` with one stage; when every stage of one flow is done,
the request goes ahead. A session is bound to the request that started it, so a
completed session cannot be replayed for a different operation.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.errors import MatrixError

StageCheck = Callable[[dict[str, Any]], Awaitable[None]]

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"

# Sessions older than this are forgotten.
SESSION_LIFETIME_MS = 30 * 60 * 1000


class UserInteractiveAuth:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def require(
        self,
        auth: Any,
        flows: list[list[str]],
        stage_checks: dict[str, StageCheck],
        *,
        request_summary: str,
        user_id: str | None = None,
    ) -> list[str]:
        """Return the completed stages once a flow is done, else raise the 401 to continue."""
        now = int(time.time() * 1000)
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "'auth' must be an object")
        auth = auth or {}
        session_id = auth.get("session")
        if session_id is not None and not isinstance(session_id, str):
            raise MatrixError(400, "M_BAD_JSON", "'auth.session' must be a string")

        if session_id is None:
            session_id = secrets.token_urlsafe(24)
            await self.store.create(session_id, now, user_id, request_summary)
            completed: list[str] = []
        else:
            session = await self.store.get(session_id)
            if session is None or now - session.created_ts > SESSION_LIFETIME_MS:
                raise MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session")
            if session.request_summary != request_summary or session.user_id != user_id:
                raise MatrixError(403, "M_FORBIDDEN", "This UIA session belongs to a different request")
            completed = session.completed

        def challenge(error: MatrixError | None = None) -> MatrixError:
            body: dict[str, Any] = {
                "flows": [{"stages": flow} for flow in flows],
                "params": {},
                "session": session_id,
            }
            if completed:
                body["completed"] = completed
            if error is None:
                return MatrixError(401, None, "Additional authentication required", **body)
            return MatrixError(401, error.errcode, error.error, **body)

        stage = auth.get("type")
        if stage is not None:
            allowed = {s for flow in flows for s in flow}
            if not isinstance(stage, str) or stage not in allowed or stage not in stage_checks:
                raise challenge(MatrixError(400, "M_UNRECOGNIZED", f"Unsupported auth stage {stage!r}"))
            try:
                await stage_checks[stage](auth)
            except MatrixError as error:
                raise challenge(error) from None
            if stage not in completed:
                completed = [*completed, stage]
                await self.store.set_completed(session_id, completed)

        if any(all(s in completed for s in flow) for flow in flows):
            await self.store.delete(session_id)
            return completed
        raise challenge()


def password_stage(user_id: str, verify: Callable[[str, str], Awaitable[bool]]) -> StageCheck:
    """The m.login.password stage, for re-proving who you are before a sensitive change."""

    async def check(auth: dict[str, Any]) -> None:
        identifier = auth.get("identifier")
        named = identifier.get("user") if isinstance(identifier, dict) else auth.get("user")
        password = auth.get("password")
        if not isinstance(password, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.password must be a string")
        if isinstance(named, str) and named not in (user_id, user_id[1:].split(":", 1)[0]):
            raise MatrixError(403, "M_FORBIDDEN", "You can only authenticate as yourself")
        if not await verify(user_id, password):
            raise MatrixError(403, "M_FORBIDDEN", "Invalid password")

    return check
