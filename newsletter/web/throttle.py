"""Request limits per key (e.g. subscribe attempts per IP per hour), in Redis or in-process.

A sliding log: each key keeps the times of its allowed hits within the last window, so no window of that length
ever holds more than `limit` of them (fixed windows allow twice the limit across a boundary: `limit` hits just
before it, `limit` more just after). Refused hits are not kept, so a key's log never exceeds `limit` entries."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from typing import Protocol


class Throttle(Protocol):
    def allow(self, key: str) -> bool:
        """Count one hit for `key`; False (and not counted) while the last window holds `limit` of its hits."""
        ...

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may be allowed again (0 when it may now)."""
        ...


class LocalThrottle:
    """For one process (embedded mode): a deque of hit times per key; keys idle for a window are dropped."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = {}
        self._pruned = time.monotonic()
        self._lock = threading.Lock()

    def _log(self, key: str, now: float) -> deque[float]:
        since = now - self.window
        if now - self._pruned > self.window:  # memory stays bounded by the keys seen within one window
            self._hits = {k: hits for k, hits in self._hits.items() if hits and hits[-1] > since}
            self._pruned = now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= since:
            hits.popleft()
        return hits

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._log(key, now)
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True

    def retry_after(self, key: str) -> float:
        now = time.monotonic()
        with self._lock:
            hits = self._log(key, now)
            return 0.0 if len(hits) < self.limit else max(0.0, hits[0] + self.window - now)


# One sorted set per key, scored by the Redis clock (the same for every web process and machine); atomic.
_ALLOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return 1
"""
_RETRY_AFTER = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""


class RedisThrottle:
    """Shared by every web process and machine."""

    def __init__(self, url: str, limit: int, window_seconds: float, prefix: str = "newsletter:throttle") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.limit = limit
        self.window = window_seconds
        self.prefix = prefix
        self._allow = self.client.register_script(_ALLOW)
        self._retry_after = self.client.register_script(_RETRY_AFTER)

    def allow(self, key: str) -> bool:
        member = os.urandom(8).hex()  # two hits in the same microsecond are two members
        return bool(self._allow(keys=[f"{self.prefix}:{key}"], args=[self.window, self.limit, member]))

    def retry_after(self, key: str) -> float:
        answer = self._retry_after(keys=[f"{self.prefix}:{key}"], args=[self.window, self.limit])
        return max(0.0, float(answer))


def minutes_to_wait(seconds: float) -> int:
    """The whole minutes a refusal names ("try again in 3 minutes"), at least one."""
    return max(1, math.ceil(seconds / 60))


def make_throttle(redis_url: str | None, limit: int, window_seconds: float, prefix: str) -> Throttle:
    if redis_url:
        return RedisThrottle(redis_url, limit, window_seconds, prefix)
    return LocalThrottle(limit, window_seconds)
