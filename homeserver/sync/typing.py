"""Typing notifications: in memory only, each with an expiry timer.

Positions are clock-based (`max(last + 1, now_ms)`), so they keep increasing across
restarts and a token from before a restart is never "in the future".
"""

from __future__ import annotations

import asyncio
import time

from homeserver.sync.notifier import Notifier

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 120_000


class Typing:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._typing: dict[str, dict[str, float]] = {}  # room -> user -> expiry (monotonic)
        self._changed_at: dict[str, int] = {}  # room -> position of its last change
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.position = int(time.time() * 1000)
        notifier.advance("typing", self.position)

    def _bump(self, room_id: str) -> None:
        self.position = max(self.position + 1, int(time.time() * 1000))
        self._changed_at[room_id] = self.position
        self.notifier.advance("typing", self.position)
        self.notifier.wake_rooms([room_id])

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None) -> None:
        key = (room_id, user_id)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        users = self._typing.setdefault(room_id, {})
        was_typing = user_id in users
        if typing:
            timeout = min(max(timeout_ms or DEFAULT_TIMEOUT_MS, 0), MAX_TIMEOUT_MS) / 1000
            users[user_id] = time.monotonic() + timeout
            self._timers[key] = asyncio.get_running_loop().call_later(timeout, self._expire, room_id, user_id)
            if not was_typing:
                self._bump(room_id)
        elif was_typing:
            del users[user_id]
            if not users:
                del self._typing[room_id]
            self._bump(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        self._timers.pop((room_id, user_id), None)
        self.set_typing(room_id, user_id, False, None)

    def user_left(self, room_id: str, user_id: str) -> None:
        if user_id in self._typing.get(room_id, {}):
            self.set_typing(room_id, user_id, False, None)

    def changed_since(self, room_id: str, position: int) -> bool:
        return self._changed_at.get(room_id, 0) > position

    def users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))
