"""The global messages/second limit: one token bucket in Redis shared by every worker process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from newsletter.ratelimit import LocalRateLimiter, RedisRateLimiter
from tests.conftest import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.serial]

TAKER = textwrap.dedent(
    """
    import sys, time
    from newsletter.ratelimit import RedisRateLimiter
    url, key = sys.argv[1], sys.argv[2]
    rate, start, seconds = (float(a) for a in sys.argv[3:6])
    limiter = RedisRateLimiter(url, rate, key=key)
    time.sleep(max(0.0, start - time.time()))
    taken = 0
    while True:
        limiter.acquire(10)  # a group of ten messages, as the send loop asks
        if time.time() - start > seconds:
            break
        taken += 10
    print(taken)
    """
)


def test_two_processes_share_one_limit(redis_url: str) -> None:
    rate, seconds = 300.0, 4.0
    key = f"test:ratelimit:{uuid.uuid4().hex}"
    start = time.time() + 1.0  # both processes begin together, after their imports
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, redis_url, key, str(rate), str(start), str(seconds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=30)[0]) for p in takers]
    # the bucket starts full (one second's worth): that burst is allowed on top of the rate
    aggregate = (sum(counts) - rate) / seconds
    print(f"\nrate limit {rate:.0f}/s shared by 2 processes: {counts} in {seconds}s -> {aggregate:.0f}/s")
    assert all(c > 0 for c in counts)  # both got a share
    assert aggregate == pytest.approx(rate, rel=0.10)


def test_redis_down_falls_back_to_a_local_limit() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", 100.0)
    started = time.monotonic()
    for _ in range(3):
        limiter.acquire(50)  # no exception: the batch goes on, limited in-process
    assert time.monotonic() - started >= 0.4


def test_local_limiter_paces() -> None:
    limiter = LocalRateLimiter(100.0)
    started = time.monotonic()
    for _ in range(3):
        limiter.acquire(50)
    assert 0.4 <= time.monotonic() - started < 1.0
