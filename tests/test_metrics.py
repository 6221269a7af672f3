"""Issue 17: /metrics and a worker's metrics during a real campaign add up to the ledger; structured logs."""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from newsletter import delivery, logs, metrics
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.models import CampaignStatus, Delivery, DeliveryStatus
from newsletter.web.app import create_app
from tests.factories import make_list, publish_sample
from tests.processes import CeleryWorker, add_subscribers, enqueue, free_port, wait_until
from tests.smtpserver import RecordingSMTPServer

TOKEN = "metrics-token-for-tests-0123456789"
RECIPIENTS = 600


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition (which must parse), by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def test_metrics_are_off_by_default_and_guarded_when_on(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/metrics").status_code == 404
    with TestClient(create_app(make_settings(metrics_enabled=True, metrics_token=TOKEN))) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 401
            assert "newsletter_" not in answer.text
        # request times are labelled by the route's template, never by what the path carried
        client.get("/c/not-a-token.1")
        client.get("/no/such/page/someone@example.org")
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
        assert "newsletter_messages_total" in answer.text
    found = samples(answer.text)  # parses
    routes = {dict(ls).get("route") for (n, ls) in found if n == "newsletter_http_request_seconds_count"}
    assert "/c/{token}" in routes and "unmatched" in routes
    assert not any("@" in r or "not-a-token" in r for r in routes if r)
    # no token and no allowlist: loopback only, and the test client is not on it
    with TestClient(create_app(make_settings(metrics_enabled=True))) as client:
        assert client.get("/metrics").status_code == 403


def test_server_label_never_carries_the_credentials() -> None:
    assert metrics.server_label("smtp://mailer@example.org@relay.example.net:587") == "relay.example.net:587"
    assert metrics.server_label("smtps://relay.example.net:465") == "relay.example.net:465"
    assert metrics.word("someone@example.org") == "other"


def test_json_log_lines_parse_and_carry_the_fields(make_settings: Callable[..., Settings]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(make_settings(log_format="json")))
    logger = logging.getLogger("newsletter.test_metrics")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logs.event(logger, "batch", "campaign 3 batch 1-500", campaign=3, first_id=1, last_id=500, sent=498)
        text_handler = logs.TextFormatter()
        record = logger.makeRecord(logger.name, logging.INFO, "x", 1, "%s", ("hello",), None)
        assert text_handler.format(record).endswith("hello")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().strip())
    assert line["event"] == "batch" and line["campaign"] == 3 and line["sent"] == 498
    assert line["message"] == "campaign 3 batch 1-500" and line["level"] == "INFO" and line["time"]


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_and_web_metrics_add_up_to_the_ledger_during_a_campaign(
    make_settings: Callable[..., Settings],
    committed_pg: str,
    redis_url: str,
    tmp_path: Path,
    output_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    # the slow server keeps the campaign sending long enough to be scraped in the middle
    with RecordingSMTPServer(pipelining=True) as smtp:
        settings = make_settings(
            database_url=committed_pg, broker_url=redis_url, smtp_url=smtp.url, batch_size=100,
            worker_metrics_port=port, log_format="json", rate_limit=300,
            metrics_enabled=True, metrics_token=TOKEN,
        )  # fmt: skip
        with session_scope(settings) as session:
            weekly = make_list(session, slug="weekly")
            add_subscribers(session, weekly, RECIPIENTS)
            digest = publish_sample(session)
            campaign_id = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))  # for the worker process only
        worker = CeleryWorker(settings, "metrics", tmp_path, concurrency=2).start()  # prefork: two children
        web = TestClient(create_app(settings))
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_until(lambda: _get(url) is not None, 30, "the worker's metrics port")
            enqueue(settings, "worker.tasks.start_campaign", campaign_id)
            wait_until(lambda: len(smtp.messages) >= RECIPIENTS // 3, 60, "a third of the campaign")
            during = samples(_get(url) or "")
            web_text = web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
            web_during = samples(web_text)
            series = [(time.monotonic(), _get(url) or "")]

            def finished() -> bool:
                series.append((time.monotonic(), _get(url) or ""))  # for the dashboard's stand-in
                return _status(settings, campaign_id) == CampaignStatus.finished

            wait_until(finished, 90, "the end", poll=0.3)
            after = samples(_get(url) or "")
            web_after = web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        except BaseException:
            print(worker.log_tail())
            raise
        finally:
            worker.stop()
            web.close()
    # real scrapes, for scripts/dashboard_stand_in.py (the docs' picture of the Grafana panels)
    start = series[0][0]
    scrapes = {"worker": [(t - start, text) for t, text in series], "web": web_text, "web_after": web_after}
    (output_dir / "scrapes.json").write_text(json.dumps(scrapes))
    with session_scope(settings) as session:
        ledger_sent = session.scalar(
            select(func.count()).where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sent)
        )
    assert ledger_sent == RECIPIENTS
    assert 0 < total(during, "newsletter_messages_total", result="sent") <= RECIPIENTS
    assert total(after, "newsletter_messages_total", result="sent") == ledger_sent  # summed over both children
    assert total(after, "newsletter_smtp_replies_total", code_class="2xx") == ledger_sent
    assert total(after, "newsletter_batch_seconds_count") == RECIPIENTS // 100
    assert total(after, "newsletter_queue_latency_seconds_count") == RECIPIENTS // 100
    assert total(after, "newsletter_send_seconds_count") >= RECIPIENTS // settings.outcome_flush_count
    assert total(after, "newsletter_rate_limit_wait_seconds_total") > 0
    # the web's view of the campaign while it was sending: its ledger rows by status, from campaign_counts
    assert total(web_during, "newsletter_campaign_recipients", campaign=str(campaign_id)) == RECIPIENTS
    assert total(web_during, "newsletter_subscribers", list="weekly", status="confirmed") == RECIPIENTS
    assert "newsletter_queue_depth" in {n for n, _ in web_during}
    for found in (during, after, web_during):
        assert not any("@" in value for _, labels in found for _, value in labels)
    # the worker's batch lines are JSON with their fields
    lines = [json.loads(x) for x in worker.log_path.read_text().splitlines() if x.startswith("{")]
    batches = [x for x in lines if x.get("event") == "batch"]
    assert sum(b["sent"] for b in batches) == RECIPIENTS
    assert {"campaign", "first_id", "last_id", "deferred", "failed", "seconds", "server", "host"} <= set(batches[0])
    assert any(x.get("event") == "campaign_state" and x["status"] == "finished" for x in lines)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - a local test URL
            return str(answer.read().decode())
    except OSError:
        return None


def _status(settings: Settings, campaign_id: int) -> CampaignStatus:
    with session_scope(settings) as session:
        return delivery.get_campaign(session, campaign_id).status
