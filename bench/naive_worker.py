"""The naive route as a baseline: one Celery task per recipient, stdlib EmailMessage, a new SMTP connection each."""

from __future__ import annotations

import os
import smtplib
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import select, update

from bench.workers import start_workers
from newsletter import delivery, links, rendering
from newsletter.config import Settings, get_settings
from newsletter.db import session_scope
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, Subscriber
from newsletter.smtpservers import parse_smtp_urls

app = Celery("naive", broker=os.environ.get("NEWSLETTER_BROKER_URL", "memory://"))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True)


@cache
def campaign_parts(campaign_id: int) -> tuple[str, str, str, str]:
    with session_scope(get_settings()) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.html and campaign.text
        return campaign.subject, campaign.html, campaign.text, campaign.lists[0].from_email


@app.task
def send_one(campaign_id: int, delivery_id: int) -> None:
    settings = get_settings()
    subject, html, text, sender = campaign_parts(campaign_id)
    with session_scope(settings) as session:
        email, name = session.execute(
            select(Subscriber.email, Subscriber.name)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.id == delivery_id)
        ).one()
        message = EmailMessage()
        message["From"] = sender
        message["To"] = formataddr((name, email))
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{campaign_id}.{delivery_id}@example.org>"
        message["List-Unsubscribe"] = f"<{settings.base_url}{links.UNSUBSCRIBE}{delivery_id}>"

        def personal(body: str) -> str:
            return body.replace(rendering.NAME, name).replace(rendering.UNSUBSCRIBE_URL, f"/u/{delivery_id}")

        message.set_content(personal(text))
        message.add_alternative(personal(html), subtype="html")
        server = parse_smtp_urls(settings.smtp_url or "")[0]
        with smtplib.SMTP(server.host, server.port) as smtp:
            smtp.sendmail(sender, [email], message.as_bytes())
        session.execute(
            update(Delivery).where(Delivery.id == delivery_id).values(status=DeliveryStatus.sent, smtp_code=250)
        )


def run(settings: Settings, digest: str, slug: str, log: Path) -> float:
    """Messages/s of the naive route for the list `slug` (planned by the real planner, sent one task each)."""
    with session_scope(settings) as session:
        campaign_id = delivery.create_campaign(session, digest_slug=digest, list_slugs=[slug], allow_repeat=True).id
        delivery.start(session, settings, campaign_id)
        ids = list(session.scalars(select(Delivery.id).where(Delivery.campaign_id == campaign_id)))
        campaign: Any = delivery.get_campaign(session, campaign_id)
        campaign.status = CampaignStatus.paused  # keep the real pipeline's tasks, if any, away from these rows
    workers = start_workers(settings, 3, log, app="bench.naive_worker")
    client = Celery(broker=settings.broker_url)
    try:
        started = time.monotonic()
        for delivery_id in ids:
            client.send_task("bench.naive_worker.send_one", args=[campaign_id, delivery_id])
        while True:
            time.sleep(0.2)
            with session_scope(settings) as session:
                left = session.scalar(
                    select(Delivery.id)
                    .where(Delivery.campaign_id == campaign_id, Delivery.status != DeliveryStatus.sent)
                    .limit(1)
                )
            if left is None:
                return len(ids) / (time.monotonic() - started)
            if workers.proc.poll() is not None:
                raise RuntimeError(f"the naive workers died; see {log}")
    finally:
        client.close()
        workers.stop()
