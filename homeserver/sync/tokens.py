"""Sync tokens: one position per stream, opaque to clients.

`s<room>_<account_data>_<receipts>_<to_device>_<presence>_<device_lists>_<typing>`.
The first part is the room-event stream position in the same `s<N>` form that
/messages uses, so a sync's `prev_batch` and `next_batch` work there too. Every
stream but typing is persisted, so tokens stay valid across restarts; typing
positions are milliseconds-based (see `homeserver.sync.typing`) and keep increasing
across restarts for the same reason.
"""

from __future__ import annotations

import msgspec

from homeserver.errors import MatrixError

STREAMS = ("room", "account_data", "receipts", "to_device", "presence", "device_lists", "typing")


class SyncToken(msgspec.Struct, frozen=True):
    room: int = 0
    account_data: int = 0
    receipts: int = 0
    to_device: int = 0
    presence: int = 0
    device_lists: int = 0
    typing: int = 0

    # Both run for every /sync answer (and once per room for prev_batch), so they are
    # spelt out rather than looped over STREAMS or left to msgspec.structs.replace.
    def encode(self) -> str:
        return (
            f"s{self.room}_{self.account_data}_{self.receipts}_{self.to_device}"
            f"_{self.presence}_{self.device_lists}_{self.typing}"
        )

    def encode_at_room(self, room: int) -> str:
        """This token with the room stream at `room` (a prev_batch), encoded."""
        return (
            f"s{room}_{self.account_data}_{self.receipts}_{self.to_device}"
            f"_{self.presence}_{self.device_lists}_{self.typing}"
        )

    def with_position(self, stream: str, position: int) -> SyncToken:
        return msgspec.structs.replace(self, **{stream: position})

    @classmethod
    def parse(cls, token: str, current: SyncToken) -> SyncToken:
        """A client's token; garbage or a position the server never reached is 400."""
        parts = token[1:].split("_") if token.startswith("s") else []
        if len(parts) != len(STREAMS) or not all(p.isdigit() and len(p) <= 18 for p in parts):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid sync token")
        parsed = cls(*(int(p) for p in parts))
        for name in STREAMS:
            if name == "typing":
                continue  # in memory: a clock-based position, clamped rather than refused
            if getattr(parsed, name) > getattr(current, name):
                raise MatrixError(400, "M_INVALID_PARAM", "Sync token is from the future")
        if parsed.typing > current.typing:
            parsed = msgspec.structs.replace(parsed, typing=current.typing)
        return parsed
