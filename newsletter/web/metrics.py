"""GET /metrics (Prometheus exposition, off unless METRICS_ENABLED) and the request-time middleware."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from newsletter import metrics, queues
from newsletter.config import Settings
from newsletter.metrics import server_label
from newsletter.models import Campaign, CampaignCount, CampaignStatus, MailingList, Subscription
from newsletter.pacing import get_pacer
from newsletter.web.pages import client_ip

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

_LOOPBACK = ("127.0.0.0/8", "::1/128")


def install(app: FastAPI, settings: Settings) -> None:
    """Time every request by its route template; serve /metrics when switched on (a 404 otherwise)."""
    app.add_middleware(RequestTimer)
    if not settings.metrics_enabled:
        return
    own = CollectorRegistry(auto_describe=True)
    own.register(DatabaseCollector(app.state.sessions))
    own.register(BrokerCollector(settings.effective_redis_url, get_pacer(settings)))
    app.state.metrics_registries = (metrics.registry(settings), own)
    # with no token, only these may read; with a token and no list, anyone holding it
    allowed = settings.metrics_allow_ips or (() if settings.metrics_token else _LOOPBACK)
    app.state.metrics_allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)
    app.include_router(router)


@router.get("/metrics")
def scrape(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    allowed = request.app.state.metrics_allowed
    if allowed and not _within(client_ip(request), allowed):
        return PlainTextResponse("forbidden\n", status_code=403)
    if settings.metrics_token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            return PlainTextResponse(
                "a bearer token is required\n", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
    return Response(metrics.exposition(*request.app.state.metrics_registries), media_type=CONTENT_TYPE_LATEST)


def _within(address: str | None, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


class RequestTimer:
    """Pure ASGI (no per-request task as BaseHTTPMiddleware makes): labels by the matched route's template
    (`/c/{token}`), so a label never carries a token, and `unmatched` for anything no route took."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            metrics.HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)


class DatabaseCollector(Collector):
    """Figures read at scrape time: recipients of campaigns sending now (campaign_counts, a few rows) and
    subscribers per list and status (a GROUP BY over subscriptions, cached for `ttl` seconds)."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float = 60.0) -> None:
        self.sessions, self.ttl = sessions, ttl
        self._lock = threading.Lock()
        self._subscribers: tuple[float, list[tuple[str, str, int]]] = (-ttl, [])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        recipients = GaugeMetricFamily(
            "newsletter_campaign_recipients",
            "Recipients of campaigns sending now, by status.",
            labels=["campaign", "status"],
        )
        subscribers = GaugeMetricFamily(
            "newsletter_subscribers",
            "Subscriptions per list and status (refreshed every minute).",
            labels=["list", "status"],
        )
        try:
            with self.sessions() as session:
                for campaign_id, status, count in _sending_counts(session):
                    recipients.add_metric([str(campaign_id), status], count)
                for slug, status, count in self._cached_subscribers(session):
                    subscribers.add_metric([slug, status], count)
        except SQLAlchemyError as error:  # the pipeline's own counters are still worth a scrape
            log.warning("metrics: the database figures are missing from this scrape: %s", error)
            return
        yield recipients
        yield subscribers

    def _cached_subscribers(self, session: Session) -> list[tuple[str, str, int]]:
        with self._lock:
            taken, rows = self._subscribers
            if time.monotonic() - taken >= self.ttl:
                rows = [
                    (slug, status.value, count)
                    for slug, status, count in session.execute(
                        select(MailingList.slug, Subscription.status, func.count())
                        .join(MailingList, MailingList.id == Subscription.list_id)
                        .group_by(MailingList.slug, Subscription.status)
                    )
                ]
                self._subscribers = (time.monotonic(), rows)
            return rows


def _sending_counts(session: Session) -> list[tuple[int, str, int]]:
    """The counter shards of every sending campaign, summed per status."""
    rows = session.execute(
        select(CampaignCount.campaign_id, CampaignCount.status, func.sum(CampaignCount.n))
        .join(Campaign, Campaign.id == CampaignCount.campaign_id)
        .where(Campaign.status == CampaignStatus.sending)
        .group_by(CampaignCount.campaign_id, CampaignCount.status)
    )
    return [(campaign_id, str(status), int(count or 0)) for campaign_id, status, count in rows]


class BrokerCollector(Collector):
    """Batches waiting in the Celery queue (Redis list lengths) and each SMTP server's shared pace."""

    def __init__(self, redis_url: str | None, pacer: Any | None, queue: str = queues.BATCHES) -> None:
        self.redis_url, self.pacer, self.queue = redis_url, pacer, queue
        self._client: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.redis_url:
            import redis

            if self._client is None:
                self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
            # kombu keeps one list per priority step: the queue's name, then NAME\x06\x16N
            keys = [self.queue, *(f"{self.queue}\x06\x16{p}" for p in (3, 6, 9))]
            try:
                depth = sum(int(self._client.llen(key)) for key in keys)
            except redis.RedisError as error:
                log.warning("metrics: the queue depth is missing from this scrape: %s", error)
            else:
                yield GaugeMetricFamily("newsletter_queue_depth", "Tasks waiting in the broker queue.", value=depth)
        if self.pacer is not None:
            level = GaugeMetricFamily(
                "newsletter_throttle_level",
                "1 while the server's pace is cut below its own, else 0.",
                labels=["server"],
            )
            rate = GaugeMetricFamily(
                "newsletter_throttle_rate", "Messages/s the server is paced at while slowed.", labels=["server"]
            )
            for pace in self.pacer.snapshot():
                slowed = pace.rate is not None and (pace.ceiling is None or pace.rate < pace.ceiling)
                level.add_metric([server_label(pace.server)], 1.0 if slowed else 0.0)
                if pace.rate is not None:
                    rate.add_metric([server_label(pace.server)], pace.rate)
            yield level
            yield rate
