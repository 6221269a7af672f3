"""The send loop against real SMTP servers: DKIM on the wire, hostile names and subjects, bad addresses,
an unreachable server, auto-pause, progress, scheduled starts."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery import counters, progress, sending
from newsletter.dkim import DkimSigner
from newsletter.mailer import MemoryMailer, SendResult, SMTPMailer
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, Subscriber
from tests.factories import make_list, make_subscribers, publish_sample
from tests.processes import free_port
from tests.smtpserver import RecordingSMTPServer


def planned(session: Session, settings: Settings, count: int, **list_fields: object) -> tuple[int, delivery.BatchRange]:
    mailing_list = make_list(session, slug="weekly", **list_fields)
    make_subscribers(session, mailing_list, count)
    digest = publish_sample(session)
    campaign_id = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id
    ranges = delivery.start(session, settings, campaign_id)
    session.commit()
    return campaign_id, ranges[0]


def rows(session: Session, campaign_id: int) -> list[Delivery]:
    session.expire_all()
    return list(session.scalars(select(Delivery).where(Delivery.campaign_id == campaign_id).order_by(Delivery.id)))


def test_dkim_signed_campaign_verifies_with_dkimpy_on_the_received_bytes(
    sessions: sessionmaker[Session],
    session: Session,
    make_settings: Callable[..., Settings],
    settings: Settings,
    tmp_path: Path,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with RecordingSMTPServer(pipelining=True) as smtp:
        settings = make_settings(
            database_url=settings.database_url,
            dkim_domain="example.org",
            dkim_selector="nl",
            dkim_key_file=key_file,
        )
        campaign_id, batch = planned(session, settings, 3)
        sending.send_batch(sessions, settings, SMTPMailer(smtp.url), campaign_id, batch.first_id, batch.last_id)
        received = smtp.wait_for(3)
    record = DkimSigner.from_file("example.org", "nl", key_file).dns_record().encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"nl._domainkey.example.org."
        return record

    for message in received:
        assert dkim.verify(message.data, dnsfunc=dns)
        signature = str(message.message["DKIM-Signature"])
        assert "a=rsa-sha256" in signature and "c=relaxed/relaxed" in signature
        match = re.search(r"h=([^;]+);", signature)
        assert match is not None
        signed = set(match[1].replace(" ", "").replace("\r\n", "").split(":"))
        assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    assert [r.status for r in rows(session, campaign_id)] == [DeliveryStatus.sent] * 3


def test_cr_lf_in_a_subscriber_name_or_the_subject_never_becomes_a_header(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    campaign_id, batch = planned(session, settings, 2)
    # Written past the validating functions, as an old import or a direct database edit could.
    session.execute(update(Subscriber).values(name="Ana\r\nBcc: victim@example.net\r\nX-Evil: 1"))
    session.execute(update(Campaign).values(subject="Weekly\r\nBcc: victim@example.net\nX-Evil: 2"))
    session.commit()
    with RecordingSMTPServer(pipelining=True) as smtp:
        sending.send_batch(sessions, settings, SMTPMailer(smtp.url), campaign_id, batch.first_id, batch.last_id)
        received = smtp.wait_for(2)
    for message in received:
        assert message.rcpt_tos in (("r0@example.com",), ("r1@example.com",))
        head = message.data.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"^(Bcc|X-Evil):", head, re.IGNORECASE | re.MULTILINE)
        assert message.message["Bcc"] is None and message.message["X-Evil"] is None
        assert "Bcc: victim" in message.message["Subject"]  # kept as harmless text on one line
        assert "\n" not in message.message["To"] and "\r" not in message.message["To"]


def test_an_address_that_cannot_be_written_fails_that_row_only(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    campaign_id, batch = planned(session, settings, 3)
    session.execute(update(Subscriber).where(Subscriber.email == "r1@example.com").values(email="r 1@example.com"))
    session.commit()
    mailer = MemoryMailer()
    report = sending.send_batch(sessions, settings, mailer, campaign_id, batch.first_id, batch.last_id)
    assert sorted(m.recipient for m in mailer.sent) == ["r0@example.com", "r2@example.com"]
    assert (report.sent, report.failed) == (2, 1)
    bad = next(r for r in rows(session, campaign_id) if r.status == DeliveryStatus.failed)
    assert bad.smtp_code is None and bad.smtp_text is not None and "not a usable email address" in bad.smtp_text


def test_an_internationalised_domain_goes_out_in_idna(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    campaign_id, batch = planned(session, settings, 1)
    session.execute(update(Subscriber).values(email="ana@қазақстан.kz"))
    session.commit()
    mailer = MemoryMailer()
    sending.send_batch(sessions, settings, mailer, campaign_id, batch.first_id, batch.last_id)
    assert [m.recipient for m in mailer.sent] == ["ana@xn--80aaa0a6awh12ed.kz"]
    assert "қазақстан".encode("idna") == b"xn--80aaa0a6awh12ed"


def test_unreachable_smtp_server_marks_nothing_sent_and_says_why(
    sessions: sessionmaker[Session], session: Session, make_settings: Callable[..., Settings], settings: Settings
) -> None:
    settings = make_settings(database_url=settings.database_url, retry_base_seconds=60)
    campaign_id, batch = planned(session, settings, 4)
    mailer = SMTPMailer(f"smtp://127.0.0.1:{free_port()}?timeout=2")
    report = sending.send_batch(sessions, settings, mailer, campaign_id, batch.first_id, batch.last_id)
    assert (report.sent, report.retried) == (0, 4) and report.retry_after is not None
    ledger = rows(session, campaign_id)
    assert {r.status for r in ledger} == {DeliveryStatus.pending}
    assert all(r.smtp_text and r.smtp_text.startswith("no SMTP server reachable") for r in ledger)
    state = progress.campaign_progress(session, campaign_id)
    assert state.counts["sent"] == 0 and state.last_error is not None and "no SMTP server reachable" in state.last_error


def test_auto_pause_when_most_of_the_last_messages_fail(
    sessions: sessionmaker[Session], session: Session, make_settings: Callable[..., Settings], settings: Settings
) -> None:
    settings = make_settings(database_url=settings.database_url, auto_pause_window=20, outcome_flush_count=10)
    campaign_id, batch = planned(session, settings, 60)
    mailer = MemoryMailer(lambda rcpt: SendResult(554, "5.7.1 Service unavailable; client host blocked"))
    sending._windows.clear()
    report = sending.send_batch(sessions, settings, mailer, campaign_id, batch.first_id, batch.last_id)
    session.expire_all()
    campaign = delivery.get_campaign(session, campaign_id)
    assert campaign.status == CampaignStatus.paused
    assert campaign.pause_reason is not None and "20 of the last 20" in campaign.pause_reason
    assert "client host blocked" in campaign.pause_reason
    assert report.failed == 20  # stopped after the window filled, the rest stay pending for a resume
    assert progress.tally(session, campaign_id).counts["pending"] == 40


def test_progress_counts_rate_and_eta(sessions: sessionmaker[Session], session: Session, settings: Settings) -> None:
    campaign_id, _ = planned(session, settings, 10)
    rows_ = rows(session, campaign_id)
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_([r.id for r in rows_[:6]]))
        .values(status=DeliveryStatus.sent, sent_at=utcnow() - dt.timedelta(seconds=5))
    )
    session.execute(update(Campaign).values(started_at=utcnow() - dt.timedelta(seconds=600)))
    session.commit()
    state = progress.campaign_progress(session, campaign_id)
    assert state.counts["sent"] == 6 and state.counts["pending"] == 4 and (state.done, state.total) == (6, 10)
    # the last minute, counted in whole ticks of the counters: 60 to 65 s
    window = progress.RATE_WINDOW_SECONDS
    assert 6 / (window + counters.TICK_SECONDS) <= state.rate <= 6 / window
    assert state.eta_seconds == pytest.approx(4 / state.rate)
    assert state.as_dict()["counts"]["sent"] == 6


def test_the_sweep_starts_a_scheduled_campaign_when_due(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    at = utcnow() + dt.timedelta(hours=1)
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"], scheduled_at=at)
    assert campaign.status == CampaignStatus.scheduled and campaign.scheduled_at == at
    session.commit()
    assert campaign.id not in delivery.sweep(session, settings).started
    later = delivery.sweep(session, settings, now=at + dt.timedelta(seconds=1))
    assert later.started == [campaign.id]
    delivery.start(session, settings, campaign.id)
    session.commit()
    session.expire_all()
    assert delivery.get_campaign(session, campaign.id).status == CampaignStatus.finished  # an empty list
