"""The reputation circuit breaker on both backends: a campaign of 2,000 to an SMTP server that accepts
everything, then complaints through the SES webhook; once the complaint share of the domain's last
messages passes 0.3% every sending campaign of that domain pauses at once, with the rate as its reason,
and campaigns of other domains carry on. A resume says which rates it overrides."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import bounces, delivery, reputation
from newsletter.config import Settings, load_settings
from newsletter.db import make_engine
from newsletter.delivery import sending
from newsletter.mailer import MemoryMailer, SMTPMailer
from newsletter.models import Campaign, CampaignStatus, Delivery, Digest, Subscriber
from tests.admin import AdminWeb, csrf_from
from tests.conftest import TEST_SECRET
from tests.factories import make_list, make_subscribers, publish_sample
from tests.smtpserver import RecordingSMTPServer
from tests.snsserver import FakeSns, ses_complaint
from tests.test_bounces import postfix_dsn
from tests.test_provider_webhooks import (  # noqa: F401 - fixtures
    Hooks,
    client,
    hook_settings,
    sendgrid_key,
    sns,
)


@pytest.fixture
def breaker_settings(hook_settings: Settings) -> Settings:  # noqa: F811 - a fixture of test_provider_webhooks
    return hook_settings.model_copy(update={"batch_size": 500})


def start_campaign(session: Session, settings: Settings, slug: str, count: int, from_email: str) -> tuple[int, list]:
    mailing_list = make_list(session, slug=slug, from_email=from_email)
    make_subscribers(session, mailing_list, count, prefix=slug)
    digest = session.scalar(select(Digest.slug)) or publish_sample(session).slug
    campaign = delivery.create_campaign(session, digest_slug=digest, list_slugs=[slug], allow_repeat=True)
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    return campaign.id, ranges


def rows_of(session: Session, campaign_id: int) -> list[tuple[str, Delivery]]:
    session.expire_all()
    query = select(Subscriber.email, Delivery).join(Subscriber).where(Delivery.campaign_id == campaign_id)
    return [(email, row) for email, row in session.execute(query.order_by(Delivery.id)).all()]


def status(session: Session, campaign_id: int) -> tuple[CampaignStatus, str | None]:
    session.expire_all()
    campaign = delivery.get_campaign(session, campaign_id)
    return campaign.status, campaign.pause_reason


def test_complaints_past_gmails_ceiling_pause_the_domains_campaigns_at_once(
    sessions: sessionmaker[Session], session: Session, breaker_settings: Settings, client: Hooks, sns: FakeSns,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = breaker_settings
    campaign_id, ranges = start_campaign(session, settings, "weekly", 2000, "news@example.org")
    assert len(ranges) == 4
    other_id, _ = start_campaign(session, settings, "other", 10, "news@other.example")
    with RecordingSMTPServer() as smtp:
        mailer = SMTPMailer(smtp.url)
        for batch in ranges[:3]:
            sending.send_batch(sessions, settings, mailer, campaign_id, batch.first_id, batch.last_id)
        sent = rows_of(session, campaign_id)[:1500]
        assert len(smtp.messages) == 1500
        for n, (email, row) in enumerate(sent[:10], start=1):
            message = ses_complaint(f"ses-{row.id}", email, row.message_id)
            answer = client.post("/webhooks/ses", content=json.dumps(sns.envelope(message, version="2")))
            assert answer.status_code == 200, answer.text
            state, reason = status(session, campaign_id)
            # 4 of 1,500 is 0.27%: within the ceiling; the 5th (0.33%) trips the breaker at once
            assert state == (CampaignStatus.sending if n < 5 else CampaignStatus.paused), n
            if n == 5:
                assert "paused campaigns" in answer.events[0]["reason"]
        state, reason = status(session, campaign_id)
        assert reason is not None and reason.startswith("reputation breaker: complaint rate 0.33% (5 of the last 1500")
        assert "example.org" in reason and "above 0.30%" in reason
        # the rest of the campaign is not sent: the next group claims nothing
        last = ranges[3]
        report = sending.send_batch(sessions, settings, mailer, campaign_id, last.first_id, last.last_id)
        assert report.sent == 0 and len(smtp.messages) == 1500
    assert status(session, other_id)[0] == CampaignStatus.sending  # another domain's reputation is its own
    with caplog.at_level(logging.WARNING, logger="newsletter.audit"):
        delivery.resume(session, settings, campaign_id)
        session.commit()
    assert any(
        "resumed, overriding the reputation breaker: complaint rate 0.33%" in r.getMessage() for r in caplog.records
    )
    assert status(session, campaign_id) == (CampaignStatus.sending, None)


def test_hard_bounces_past_the_limit_pause_and_a_few_do_not(
    sessions: sessionmaker[Session], session: Session, breaker_settings: Settings
) -> None:
    settings = breaker_settings.model_copy(update={"hard_bounce_rate_limit": 0.01, "reputation_min_messages": 100})
    campaign_id, ranges = start_campaign(session, settings, "weekly", 200, "news@example.org")
    for batch in ranges:
        sending.send_batch(sessions, settings, MemoryMailer(), campaign_id, batch.first_id, batch.last_id)
    # a finished campaign has nothing to pause, so mark it sending again as if its last batch were running
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status=CampaignStatus.sending))
    session.commit()
    rows = rows_of(session, campaign_id)
    for n, (email, row) in enumerate(rows[:3], start=1):
        [outcome] = bounces.ingest(session, settings, postfix_dsn(row.message_id or "", email))
        session.commit()
        assert outcome.result == "suppressed"
        # 2 of 200 is 1%: not above the 1% limit; the third is
        assert status(session, campaign_id)[0] == (CampaignStatus.sending if n < 3 else CampaignStatus.paused)
    reason = status(session, campaign_id)[1] or ""
    assert reason.startswith("reputation breaker: hard-bounce rate 1.50% (3 of the last 200 messages from example.org)")


def test_the_breaker_waits_for_enough_messages_and_can_be_switched_off(
    sessions: sessionmaker[Session], session: Session, breaker_settings: Settings
) -> None:
    campaign_id, ranges = start_campaign(session, breaker_settings, "weekly", 20, "news@example.org")
    for batch in ranges:
        sending.send_batch(sessions, breaker_settings, MemoryMailer(), campaign_id, batch.first_id, batch.last_id)
    rates = reputation.rates(session, breaker_settings, "example.org")
    assert (rates.messages, rates.complaints) == (20, 0)
    tripped = reputation.Rates("example.org", 20, 10, 0)
    assert tripped.verdict(breaker_settings) is None  # 20 messages < REPUTATION_MIN_MESSAGES
    many = reputation.Rates("example.org", 1000, 10, 100)
    assert (
        many.verdict(breaker_settings.model_copy(update={"complaint_rate_limit": 0, "hard_bounce_rate_limit": 0}))
        is None
    )
    assert (many.verdict(breaker_settings) or "").startswith("reputation breaker: complaint rate 1.00%")


def test_cli_resume_says_which_rates_it_overrides(committed_pg: str, tmp_path: Path) -> None:
    from tests.test_cli import Cli

    cli = Cli(committed_pg, tmp_path)
    engine = make_engine(committed_pg)
    try:
        with Session(engine) as session:
            settings = load_settings(database_url=committed_pg, secret_key=TEST_SECRET, outbox_dir=tmp_path / "outbox")
            campaign_id, _ = start_campaign(session, settings, "weekly", 3, "news@example.org")
            reason = "reputation breaker: complaint rate 0.40% (4 of the last 1000 messages from example.org)"
            session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id)
                .values(status=CampaignStatus.paused, pause_reason=reason)
            )
            session.commit()
    finally:
        engine.dispose()
    done = cli.run("campaigns", "resume", str(campaign_id))
    assert done.stdout.strip() == f"campaign {campaign_id} resumed, overriding the {reason}"


def test_the_dashboard_names_the_paused_campaigns_the_domain_and_the_rates_with_a_resume(
    admin_web: AdminWeb, sessions: sessionmaker[Session], session: Session, breaker_settings: Settings
) -> None:
    settings = breaker_settings.model_copy(update={"hard_bounce_rate_limit": 0.01, "reputation_min_messages": 100})
    campaign_id, ranges = start_campaign(session, settings, "weekly", 200, "news@example.org")
    for batch in ranges:
        sending.send_batch(sessions, settings, MemoryMailer(), campaign_id, batch.first_id, batch.last_id)
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status=CampaignStatus.sending))
    session.commit()
    browser = admin_web.signed_in()
    calm = browser.get("/admin")
    assert calm.status_code == 200 and "breaker-alert" not in calm.text
    for email, row in rows_of(session, campaign_id)[:3]:
        bounces.ingest(session, settings, postfix_dsn(row.message_id or "", email))
        session.commit()
    assert status(session, campaign_id)[0] == CampaignStatus.paused
    page = browser.get("/admin")
    alert = page.text[page.text.index('<section class="flash flash-error breaker-alert" role="alert"') :]
    alert = alert[: alert.index("</section>")]
    subject = delivery.get_campaign(session, campaign_id).subject
    assert "Sending paused to protect your domain" in alert
    assert "Hard-bounce rate 1.50% (3 of the last 200 messages from example.org) is above 1.00%" in alert
    assert f'href="/admin/campaigns/{campaign_id}"' in alert and subject in alert.replace("&#39;", "'")
    # the resume in the alert is the campaign's own (with its CSRF token); once resumed the alert is gone
    answer = browser.post(f"/admin/campaigns/{campaign_id}/resume", data={"csrf_token": csrf_from(alert)})
    assert answer.status_code == 303
    assert status(session, campaign_id)[0] == CampaignStatus.finished  # (every message had gone out)
    assert "breaker-alert" not in browser.get("/admin").text
