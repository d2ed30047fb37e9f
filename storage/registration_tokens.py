"""Registration tokens that admins hand out when registration is otherwise closed."""

from __future__ import annotations

import msgspec
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.schema import registration_tokens as tokens


class RegistrationToken(msgspec.Struct, frozen=True):
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None

    def usable(self, now_ms: int) -> bool:
        if self.expiry_time is not None and self.expiry_time <= now_ms:
            return False
        return self.uses_allowed is None or self.completed + self.pending < self.uses_allowed


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, token: str) -> RegistrationToken | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(tokens).where(tokens.c.token == token))).first()
        return RegistrationToken(**row._mapping) if row else None

    async def list(self) -> list[RegistrationToken]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(tokens).order_by(tokens.c.token))
            return [RegistrationToken(**row._mapping) for row in rows]

    async def create(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> bool:
        try:
            async with self.db.write() as conn:
                await conn.execute(
                    insert(tokens).values(
                        token=token,
                        uses_allowed=uses_allowed,
                        pending=0,
                        completed=0,
                        expiry_time=expiry_time,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def delete(self, token: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(delete(tokens).where(tokens.c.token == token))
        return result.rowcount > 0

    async def use(self, token: str, now_ms: int) -> bool:
        """Count one completed registration against the token, if it is still usable."""
        async with self.db.write() as conn:
            row = (await conn.execute(select(tokens).where(tokens.c.token == token))).first()
            if row is None or not RegistrationToken(**row._mapping).usable(now_ms):
                return False
            await conn.execute(
                update(tokens).where(tokens.c.token == token).values(completed=tokens.c.completed + 1)
            )
        return True

    async def update(self, token: str, values: dict[str, int | None]) -> RegistrationToken | None:
        """Set uses_allowed and/or expiry_time; the updated token, or None if unknown."""
        allowed = {k: v for k, v in values.items() if k in ("uses_allowed", "expiry_time")}
        async with self.db.write() as conn:
            if allowed:
                await conn.execute(update(tokens).where(tokens.c.token == token).values(allowed))
            row = (await conn.execute(select(tokens).where(tokens.c.token == token))).first()
        return RegistrationToken(**row._mapping) if row else None
