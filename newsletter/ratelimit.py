"""A messages-per-second limit shared by every worker process and machine (Redis), or by one process."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from newsletter.config import Settings

log = logging.getLogger(__name__)

# Token bucket kept in one Redis hash, timed by the Redis clock: the script runs atomically, so workers
# on any number of machines never over-draw together.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens < want then
  wait = (want - tokens) / rate
end
tokens = tokens - want
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], 60)
return tostring(wait)
"""


class RateLimiter(Protocol):
    def acquire(self, count: int) -> None: ...


class LocalRateLimiter:
    """Token bucket for one process (embedded mode, no Redis)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst or max(rate, 1.0)
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, count: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - count
            self._at = now
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class RedisRateLimiter:
    """Token bucket in Redis: tokens are taken before waiting, so concurrent workers queue fairly."""

    def __init__(self, url: str, rate: float, key: str = "newsletter:ratelimit", burst: float | None = None) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.rate = rate
        self.burst = burst or max(rate, 1.0)
        self.key = key
        self._take = self.client.register_script(_TAKE)
        self._fallback: LocalRateLimiter | None = None

    def acquire(self, count: int) -> None:
        import redis

        try:
            wait = float(self._take(keys=[self.key], args=[self.rate, self.burst, count]))
        except redis.RedisError as error:
            # Redis restarting must not stop the send: limit this process alone meanwhile. With N workers
            # that allows up to N times the rate for the outage; stopping altogether would be worse.
            if self._fallback is None:
                log.warning("rate limit: Redis unavailable (%s); limiting this process alone", error)
                self._fallback = LocalRateLimiter(self.rate, self.burst)
            self._fallback.acquire(count)
            return
        self._fallback = None
        if wait > 0:
            time.sleep(wait)


def get_rate_limiter(settings: Settings) -> RateLimiter | None:
    if not settings.rate_limit:
        return None
    url = settings.effective_redis_url
    if url:
        return RedisRateLimiter(url, settings.rate_limit)
    return LocalRateLimiter(settings.rate_limit)
