"""Fixed-window request counters per key (e.g. subscribe attempts per IP per hour), in Redis or in-process."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Throttle(Protocol):
    def allow(self, key: str) -> bool:
        """Count one hit for `key`; False once the key has used up its window."""
        ...


class LocalThrottle:
    """For one process (embedded mode): a dict of window counters, pruned as windows pass."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._counts: dict[str, int] = {}
        self._current = 0
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        window = int(time.time() // self.window)
        with self._lock:
            if window != self._current:
                self._counts.clear()  # a new window forgets every key: memory stays bounded by one window
                self._current = window
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        return count <= self.limit


class RedisThrottle:
    """Shared by every web process and machine: INCR on a key per window, which expires with it."""

    def __init__(self, url: str, limit: int, window_seconds: float, prefix: str = "newsletter:throttle") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.limit = limit
        self.window = window_seconds
        self.prefix = prefix

    def allow(self, key: str) -> bool:
        window = int(time.time() // self.window)
        name = f"{self.prefix}:{window}:{key}"
        pipe = self.client.pipeline()
        pipe.incr(name)
        pipe.expire(name, int(self.window) + 60)
        count, _ = pipe.execute()
        return int(count) <= self.limit


def make_throttle(redis_url: str | None, limit: int, window_seconds: float, prefix: str) -> Throttle:
    if redis_url:
        return RedisThrottle(redis_url, limit, window_seconds, prefix)
    return LocalThrottle(limit, window_seconds)
