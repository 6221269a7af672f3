"""Prometheus instruments of the pipeline and the public endpoints, and the scrape-time figures read cheaply.

Counters are incremented per group of messages (one `inc` per outcome kind per group), never per message
on the hot path. Labels are bounded: a result, an SMTP server's host:port, a code class, a list slug, a
campaign id; never an address. With `PROMETHEUS_MULTIPROC_DIR` set (prefork Celery pools, `serve
--workers N`) prometheus-client keeps each process's values in that directory and `registry()` sums them.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.registry import REGISTRY

from newsletter.config import Settings

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

MESSAGES = Counter("newsletter_messages", "Messages by outcome: sent, deferred, failed, unknown.", ["result"])
SMTP_REPLIES = Counter(
    "newsletter_smtp_replies", "SMTP final replies by server (host:port) and class (2xx, 4xx, 5xx, none).",
    ["server", "code_class"],
)  # fmt: skip
SEND_SECONDS = Histogram("newsletter_send_seconds", "Time to compose and send one group of messages.", buckets=_SECONDS)
BATCH_SECONDS = Histogram("newsletter_batch_seconds", "Time of one batch task, claim to release.", buckets=_SECONDS)
QUEUE_LATENCY = Histogram(
    "newsletter_queue_latency_seconds", "From when a batch was due (enqueued + countdown) to when it started.",
    buckets=_SECONDS,
)  # fmt: skip
RATE_LIMIT_WAIT = Counter("newsletter_rate_limit_wait_seconds", "Time batches waited for the global rate limit.")
SMTP_CONNECTIONS = Gauge(
    "newsletter_smtp_connections", "Open SMTP connections by server (host:port).", ["server"],
    multiprocess_mode="livesum",
)  # fmt: skip
UNKNOWN = Counter("newsletter_unknown", "Deliveries the sweep found in flight when their worker died.")
BOUNCES = Counter("newsletter_bounces", "Bounce and complaint reports acted on.", ["kind", "source"])
UNSUBSCRIBES = Counter("newsletter_unsubscribes", "Unsubscribes that changed a subscription.", ["source"])
TRACKING_EVENTS = Counter("newsletter_tracking_events", "Opens and clicks recorded.", ["kind"])
HTTP_SECONDS = Histogram(
    "newsletter_http_request_seconds", "HTTP request time by route template.", ["route"], buckets=_SECONDS
)

_WORD = re.compile(r"[a-z0-9_-]{1,32}")


def word(value: str) -> str:
    """A label value from a short fixed vocabulary (a source name), or `other` for anything else."""
    value = value.lower()
    return value if _WORD.fullmatch(value) else "other"


def server_label(display: str) -> str:
    """host:port of a pool entry from its display URL (smtp://user@host:25): never the user name."""
    parts = urlsplit(display if "://" in display else f"smtp://{display}")
    host = parts.hostname or "unknown"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or 25}"


def code_class(code: int) -> str:
    return f"{code // 100}xx" if 200 <= code < 600 else "none"


def count_replies(server: str, codes: Iterable[int]) -> None:
    """One increment per code class of a group."""
    for klass, count in Tally(map(code_class, codes)).items():
        SMTP_REPLIES.labels(server, klass).inc(count)


def count_outcomes(*, sent: int, deferred: int, failed: int) -> None:
    for result, count in (("sent", sent), ("deferred", deferred), ("failed", failed)):
        if count:
            MESSAGES.labels(result).inc(count)


def count_unknown(count: int) -> None:
    if count:
        MESSAGES.labels("unknown").inc(count)
        UNKNOWN.inc(count)


def timed_wait(acquire: Callable[[int], None]) -> Callable[[int], None]:
    """The rate limiter's acquire, adding the time it blocked to the wait counter."""

    def wait(count: int) -> None:
        started = time.perf_counter()
        acquire(count)
        RATE_LIMIT_WAIT.inc(time.perf_counter() - started)

    return wait


for _result in ("sent", "deferred", "failed", "unknown"):
    MESSAGES.labels(_result)  # every result is exported from the start, at 0, so rates work at once


# --- exposition --------------------------------------------------------------------------------


def registry(settings: Settings) -> CollectorRegistry:
    """The registry to expose: every process's values in multiprocess mode, this process's otherwise."""
    if settings.prometheus_multiproc_dir is None:
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, path=str(settings.prometheus_multiproc_dir))
    return combined


def clear_stale(directory: Path) -> None:
    """At a service's start: remove the value files its previous run left (but not this process's own)."""
    for path in directory.glob("*.db"):
        if not path.stem.endswith(f"_{os.getpid()}"):
            path.unlink(missing_ok=True)


def exposition(*registries: CollectorRegistry) -> bytes:
    return b"".join(generate_latest(r) for r in registries)
