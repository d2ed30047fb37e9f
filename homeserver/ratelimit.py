"""Token-bucket rate limiting, keyed by action and requester (user or IP address)."""

from __future__ import annotations

import time

from homeserver.config import RateLimit
from homeserver.errors import limit_exceeded


class RateLimiter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        # key -> (tokens left, time of last refill)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def check(self, action: str, key: str, rule: RateLimit) -> None:
        """Take one token for (action, key), or raise 429 M_LIMIT_EXCEEDED."""
        if not self.enabled:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get((action, key), (float(rule.burst_count), now))
        tokens = min(float(rule.burst_count), tokens + (now - last) * rule.per_second)
        if tokens < 1:
            retry_after_ms = int((1 - tokens) / rule.per_second * 1000) + 1
            raise limit_exceeded(retry_after_ms)
        self._buckets[(action, key)] = (tokens - 1, now)
        if len(self._buckets) > 100_000:
            self._forget_full_buckets(now)

    def _forget_full_buckets(self, now: float) -> None:
        # Buckets idle for a minute are full again; dropping them bounds memory.
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
