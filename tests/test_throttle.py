"""The request limits (sign-in, subscribe): no window of their length ever holds more than the limit."""

from __future__ import annotations

import time

import pytest

from newsletter.web import throttle
from newsletter.web.throttle import LocalThrottle, RedisThrottle


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_window_boundary_does_not_give_the_limit_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(899.0)  # just before a boundary of fixed 900-second windows
    monkeypatch.setattr(throttle.time, "monotonic", clock)
    monkeypatch.setattr(throttle.time, "time", clock)
    limit = LocalThrottle(10, 900)
    assert [limit.allow("alice") for _ in range(10)] == [True] * 10
    clock.now = 901.0  # a fixed window would start again here and allow ten more
    assert [limit.allow("alice") for _ in range(10)] == [False] * 10
    assert limit.retry_after("alice") == pytest.approx(898.0)
    assert limit.allow("bob")  # another key has its own log
    clock.now = 899.0 + 900.0 + 0.001  # the first ten have left the window
    assert limit.retry_after("alice") == 0.0
    assert [limit.allow("alice") for _ in range(11)] == [True] * 10 + [False]


def test_refused_hits_do_not_extend_the_wait_and_idle_keys_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(0.0)
    monkeypatch.setattr(throttle.time, "monotonic", clock)
    limit = LocalThrottle(2, 60)
    assert [limit.allow("ip"), limit.allow("ip"), limit.allow("ip")] == [True, True, False]
    clock.now = 59.0
    assert not limit.allow("ip")  # refused, and not kept
    clock.now = 60.5
    assert limit.allow("ip")
    for n in range(1000):
        limit.allow(f"visitor-{n}")
    clock.now = 200.0
    limit.allow("late")
    assert set(limit._hits) == {"late"}  # memory: only the keys seen within the last window


def test_the_redis_log_is_shared_and_says_how_long_to_wait(redis_url: str) -> None:
    prefix = f"t-{time.time_ns()}"
    first, second = RedisThrottle(redis_url, 3, 3600, prefix), RedisThrottle(redis_url, 3, 3600, prefix)
    assert first.retry_after("ip") == 0.0
    assert [first.allow("ip"), second.allow("ip"), first.allow("ip"), second.allow("ip")] == [True] * 3 + [False]
    assert 3590 < second.retry_after("ip") <= 3600
    assert first.allow("other-ip") and first.retry_after("other-ip") == 0.0
    assert first.client.zcard(f"{prefix}:ip") == 3  # the refused hit was not kept
    assert 3590_000 < first.client.pttl(f"{prefix}:ip") <= 3600_000


def test_a_redis_hit_leaves_the_window_after_it(redis_url: str) -> None:
    limit = RedisThrottle(redis_url, 2, 0.3, f"t-{time.time_ns()}")
    assert [limit.allow("k"), limit.allow("k"), limit.allow("k")] == [True, True, False]
    time.sleep(0.35)  # longer than the window: both hits are out of it, whatever the machine's load
    assert limit.retry_after("k") == 0.0 and limit.allow("k")
