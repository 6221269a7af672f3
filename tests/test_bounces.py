"""Bounces and complaints that come back by mail (RFC 3464 DSNs, RFC 5965 ARF) on both backends, the API
and the CLI. The reports follow what postfix, Exim-style relays and feedback loops really send."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import bounces, delivery
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.delivery import sending
from newsletter.mailer import MemoryMailer
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    EventType,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from tests.apiclient import api_client
from tests.factories import make_list, make_subscribers, publish_sample

# postfix's bounce(8): the undelivered message's headers only (text/rfc822-headers)
POSTFIX_DSN = """\
Return-Path: <>
Date: Sat, 28 Nov 2026 04:00:00 +0000 (UTC)
From: MAILER-DAEMON@relay.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces@news.example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="A1B2C3.1764302400/relay.example.org"
Message-Id: <20261128040000.A1B2C3@relay.example.org>

This is a MIME-encapsulated message.

--A1B2C3.1764302400/relay.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--A1B2C3.1764302400/relay.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org
X-Postfix-Queue-ID: A1B2C3
Arrival-Date: Sat, 28 Nov 2026 03:59:58 +0000 (UTC)

Final-Recipient: rfc822; {final}
Original-Recipient: rfc822;{original}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; {code} {status} <{final}>: Recipient address
    rejected: {words}

--A1B2C3.1764302400/relay.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: The Weekly <news@example.org>
To: {original}
Subject: Issue 42
Message-ID: {message_id}

--A1B2C3.1764302400/relay.example.org--
"""

# A relay that returns the whole message (message/rfc822) and no Original-Recipient
RELAY_DSN = """\
From: Mail Delivery Subsystem <mailer-daemon@relay.example.net>
To: bounces@news.example.org
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000b1c2"; report-type=delivery-status

--000000000000b1c2
Content-Type: text/plain; charset="UTF-8"

The recipient's mailbox is full and can't accept messages now.

--000000000000b1c2
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net

Final-Recipient: rfc822; {final}
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 The email account that you tried to reach is over quota.

--000000000000b1c2
Content-Type: message/rfc822

From: The Weekly <news@example.org>
To: {final}
Subject: Issue 42
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

The issue.
--000000000000b1c2--
"""

# RFC 5965 feedback loop report; the recipient is often redacted
ARF = """\
From: <fbl@mailbox.example.net>
Date: Sat, 28 Nov 2026 05:00:00 +0000
Subject: FW: Issue 42
To: <bounces@news.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.25.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@news.example.org>
Original-Rcpt-To: <redacted@mailbox.example.net>
Arrival-Date: Sat, 28 Nov 2026 04:00:00 +0000
Source-IP: 192.0.2.25

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: The Weekly <news@example.org>
To: {final}
Subject: Issue 42
Message-ID: {message_id}

The issue.
--part1_13d.2e68ed54_boundary--
"""

PLAIN = b"From: someone@example.com\r\nTo: bounces@news.example.org\r\nSubject: thanks!\r\n\r\nLoved the issue.\r\n"


def postfix_dsn(
    message_id: str, final: str, *, original: str | None = None, status: str = "5.1.1", action: str = "failed"
) -> bytes:
    code, words = ("550", "User unknown") if status.startswith("5") else ("450", "Try later")
    return POSTFIX_DSN.format(
        message_id=message_id, final=final, original=original or final, status=status, action=action,
        code=code, words=words,
    ).encode()  # fmt: skip


def send_sample(sessions: sessionmaker[Session], session: Session, settings: Settings) -> dict[str, Delivery]:
    """A finished campaign to four subscribers: their ledger rows by address."""
    mailing_list = make_list(session, slug="weekly")
    make_subscribers(session, mailing_list, 4)
    digest = publish_sample(session)
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"])
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    for batch in ranges:
        sending.send_batch(sessions, settings, MemoryMailer(), campaign.id, batch.first_id, batch.last_id)
    session.expire_all()
    rows = session.execute(
        select(Subscriber.email, Delivery).join(Subscriber).where(Delivery.campaign_id == campaign.id)
    ).all()
    return {address: row for address, row in rows}


@pytest.fixture
def sent(sessions: sessionmaker[Session], session: Session, settings: Settings) -> dict[str, Delivery]:
    return send_sample(sessions, session, settings)


def state(session: Session) -> tuple[list[tuple[str, str]], list[tuple[str, int | None]], list[str]]:
    """What a report may change: suppressions, ledger rows, events."""
    session.expire_all()
    return (
        sorted((s.email or "", s.reason.value) for s in session.scalars(select(Suppression))),
        sorted((d.status.value, d.smtp_code) for d in session.scalars(select(Delivery))),
        sorted(e.type.value for e in session.scalars(select(Event).where(Event.type != EventType.open))),
    )


def test_a_hard_bounce_fails_the_row_suppresses_the_address_and_is_recorded_once(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    row = sent["r1@example.com"]
    report = postfix_dsn(row.message_id or "", "R1@Example.com")
    [outcome] = bounces.ingest(session, settings, report)
    session.commit()
    assert (outcome.result, outcome.delivery_id, outcome.campaign_id) == ("suppressed", row.id, row.campaign_id)
    assert outcome.report.status == "5.1.1" and outcome.report.recipient == "R1@Example.com"
    session.refresh(row)
    assert (row.status, row.smtp_code) == (DeliveryStatus.failed, 550)
    assert row.smtp_text and "5.1.1" in row.smtp_text and "rejected: User unknown" in row.smtp_text
    suppression = session.scalars(select(Suppression)).one()
    assert (suppression.email, suppression.reason) == ("r1@example.com", SuppressionReason.hard_bounce)
    event = session.scalars(select(Event).where(Event.type == EventType.bounce)).one()
    assert event.delivery_id == row.id and event.detail and event.detail.startswith("5.1.1 smtp; 550")

    before = state(session)
    [again] = bounces.ingest(session, settings, report)
    session.commit()
    assert again.result == "already recorded" and state(session) == before


def test_soft_bounce_is_recorded_and_the_address_kept(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    row = sent["r2@example.com"]
    [outcome] = bounces.ingest(
        session, settings, RELAY_DSN.format(message_id=row.message_id, final="r2@example.com").encode()
    )
    session.commit()
    assert outcome.result == "recorded" and "soft" in outcome.reason
    session.refresh(row)
    assert (row.status, row.smtp_code) == (DeliveryStatus.failed, 552)
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    assert session.scalar(select(func.count()).where(Event.type == EventType.bounce)) == 1


def test_a_complaint_suppresses_even_with_a_redacted_recipient(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    row = sent["r3@example.com"]
    [outcome] = bounces.ingest(
        session, settings, ARF.format(message_id=row.message_id, final="r3@example.com").encode()
    )
    session.commit()
    assert (outcome.report.kind, outcome.result) == ("complaint", "suppressed")
    suppression = session.scalars(select(Suppression)).one()
    assert (suppression.email, suppression.reason) == ("r3@example.com", SuppressionReason.complaint)
    assert session.scalar(select(func.count()).where(Event.type == EventType.complaint)) == 1
    session.refresh(row)
    assert row.status == DeliveryStatus.sent  # it did arrive: the reader complained about it


def test_delays_forwarded_copies_and_foreign_reports_change_nothing_they_should_not(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    row = sent["r0@example.com"]
    before = state(session)
    delayed = postfix_dsn(row.message_id or "", "r0@example.com", status="4.4.1", action="delayed")
    [outcome] = bounces.ingest(session, settings, delayed)
    assert outcome.result == "ignored" and "still trying" in outcome.reason

    # Message-IDs of the right shape that this installation did not write, or of other mail
    mac = (row.message_id or "").split(".")[2].split("@")[0]
    forged = f"<{row.campaign_id}.{row.id}.0123456789abcdef0123@example.org>"
    other_campaign = f"<{row.campaign_id + 1}.{row.id}.{mac}@example.org>"
    for message_id in (forged, other_campaign, "<20261128.abc@elsewhere.example>", ""):
        [outcome] = bounces.ingest(session, settings, postfix_dsn(message_id, "r0@example.com"))
        assert outcome.result == "ignored" and outcome.delivery_id is None, message_id
    session.commit()
    assert state(session) == before

    # a bounce naming another address than the delivery's recipient (a forwarded copy, or a forger who
    # quotes their own Message-ID with someone else's address) changes nothing at all
    forwarded = postfix_dsn(row.message_id or "", "old-job@example.net", original="someone-else@example.net")
    [outcome] = bounces.ingest(session, settings, forwarded)
    session.commit()
    assert outcome.result == "ignored" and "another address" in outcome.reason
    assert state(session) == before


def test_a_reader_cannot_forge_reports_about_other_deliveries_from_their_own_message_id(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    """The attack of issue 11, item 1: a reader sees their own Message-ID, `<campaign.row.mac@domain>`,
    and sends complaints and hard bounces quoting the same form for rows 1..50 of the campaign."""
    mine = sent["r0@example.com"]
    assert mine.message_id is not None
    campaign_id, row_id, rest = mine.message_id.strip("<>").split(".", 2)
    mac, domain = rest.split("@")
    assert int(row_id) == mine.id and len(mac) == 20
    # every delivery's Message-ID is its own, not a shared per-campaign suffix
    assert len({d.message_id for d in sent.values()}) == len(sent)
    assert all(mac not in (d.message_id or "") for a, d in sent.items() if a != "r0@example.com")
    before = state(session)
    for n in range(1, 51):
        if n == mine.id:
            continue
        guessed = f"<{campaign_id}.{n}.{mac}@{domain}>"
        [complaint] = bounces.ingest(session, settings, ARF.format(final="r1@example.com", message_id=guessed).encode())
        assert complaint.result == "ignored" and complaint.delivery_id is None, n
        for victim in sent:
            [bounce] = bounces.ingest(session, settings, postfix_dsn(guessed, victim))
            assert bounce.result == "ignored" and bounce.delivery_id is None, (n, victim)
    session.commit()
    assert state(session) == before

    # the forger's own, real Message-ID with a victim's address in the DSN: nothing changes either
    for victim in ("r1@example.com", "r2@example.com"):
        [outcome] = bounces.ingest(session, settings, postfix_dsn(mine.message_id, victim))
        assert outcome.result == "ignored" and "another address" in outcome.reason
    session.commit()
    assert state(session) == before

    # while the real report of each delivery is still read
    other = sent["r1@example.com"]
    [outcome] = bounces.ingest(session, settings, postfix_dsn(other.message_id or "", "r1@example.com"))
    session.commit()
    assert outcome.result == "suppressed" and outcome.delivery_id == other.id
    assert [s.email for s in session.scalars(select(Suppression))] == ["r1@example.com"]


def test_reports_about_mail_sent_before_a_key_rotation_still_count(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    row = sent["r0@example.com"]
    rotated = settings.model_copy(
        update={"secret_key": "a-brand-new-secret-key-0123456789", "old_secret_keys": (settings.secret_key,)}
    )
    unknown = settings.model_copy(update={"secret_key": "a-brand-new-secret-key-0123456789", "old_secret_keys": ()})
    [outcome] = bounces.ingest(session, unknown, postfix_dsn(row.message_id or "", "r0@example.com"))
    assert outcome.result == "ignored" and outcome.delivery_id is None
    [outcome] = bounces.ingest(session, rotated, postfix_dsn(row.message_id or "", "r0@example.com"))
    session.commit()
    assert outcome.result == "suppressed" and outcome.delivery_id == row.id


@pytest.mark.parametrize(
    "data",
    [
        PLAIN,
        b"",
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x--\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: text/plain\r\n\r\nno status part\r\n--x--\r\n",
    ],
    ids=["plain-reply", "empty", "read-receipt", "no-status-part"],
)
def test_what_is_not_a_report_is_refused_and_changes_nothing(
    session: Session, settings: Settings, sent: dict[str, Delivery], data: bytes
) -> None:
    before = state(session)
    with pytest.raises(bounces.NotAReport):
        bounces.ingest(session, settings, data)
    assert state(session) == before


def test_a_suppressed_bounce_keeps_the_address_out_of_the_next_campaign(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    row = sent["r1@example.com"]
    bounces.ingest(session, settings, postfix_dsn(row.message_id or "", "r1@example.com"))
    session.commit()
    digest = session.scalars(select(Digest.slug)).one()
    campaign = delivery.create_campaign(session, digest_slug=digest, list_slugs=["weekly"], allow_repeat=True)
    delivery.start(session, settings, campaign.id)
    session.commit()
    planned = session.scalars(
        select(Subscriber.email).join(Delivery).where(Delivery.campaign_id == campaign.id).order_by(Subscriber.email)
    ).all()
    assert planned == ["r0@example.com", "r2@example.com", "r3@example.com"]


def test_api_records_a_posted_report_for_admins_only(
    settings: Settings, sessions: sessionmaker[Session], session: Session, sent: dict[str, Delivery]
) -> None:
    row = sent["r1@example.com"]
    report = postfix_dsn(row.message_id or "", "r1@example.com")
    with api_client(settings, sessions) as api:
        refused = api.call("POST", "/api/v1/bounces", "editor", content=report)
        assert refused.status_code == 403
        before = state(session)
        bad = api.call("POST", "/api/v1/bounces", content=PLAIN, headers={"Content-Type": "message/rfc822"})
        assert bad.status_code == 422 and "multipart/report" in bad.json()["error"]
        assert state(session) == before
        answer = api.call("POST", "/api/v1/bounces", content=report, headers={"Content-Type": "message/rfc822"})
        assert answer.status_code == 200, answer.text
        [outcome] = answer.json()["reports"]
        assert outcome["result"] == "suppressed" and outcome["delivery_id"] == row.id
        assert outcome["status"] == "5.1.1" and outcome["message_id"] == row.message_id
    session.expire_all()
    assert session.scalar(select(Suppression.reason)) == SuppressionReason.hard_bounce


@pytest.fixture
def committed_session(committed_pg: str) -> Iterator[tuple[sessionmaker[Session], Session]]:
    """Real commits, so another process sees them; closed before the database is emptied."""
    engine = make_engine(committed_pg)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with sessions() as session:
        yield sessions, session
    engine.dispose()


def test_cli_ingests_files_directories_and_stdin(
    committed_pg: str, committed_session: tuple[sessionmaker[Session], Session], make_settings, tmp_path: Path
) -> None:
    settings = make_settings(database_url=committed_pg)
    sessions, session = committed_session
    sent = send_sample(sessions, session, settings)
    mailbox = tmp_path / "new"
    mailbox.mkdir()
    (mailbox / "1.eml").write_bytes(postfix_dsn(sent["r1@example.com"].message_id or "", "r1@example.com"))
    (mailbox / "2.eml").write_bytes(ARF.format(message_id=sent["r3@example.com"].message_id, final="x").encode())
    env = {"NEWSLETTER_DATABASE_URL": settings.database_url, "NEWSLETTER_SECRET_KEY": settings.secret_key,
           "PATH": "/usr/bin:/bin"}  # fmt: skip

    def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "newsletter", "bounces", "ingest", *args]
        return subprocess.run(command, input=stdin, env=env, capture_output=True, timeout=60, check=False)

    done = run(str(mailbox))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2 and "bounce 5.1.1 r1@example.com" in lines[0] and "suppressed" in lines[0]
    assert "complaint" in lines[1] and "suppressed" in lines[1]

    refused = run(stdin=PLAIN)
    assert refused.returncode == 1 and b"stdin: not a delivery status" in refused.stderr
    again = run("-", "--json", stdin=postfix_dsn(sent["r1@example.com"].message_id or "", "r1@example.com"))
    assert again.returncode == 0
    assert b'"result": "already recorded"' in again.stdout
    session.expire_all()
    suppressed = {s.email: s.reason for s in session.scalars(select(Suppression))}
    assert suppressed == {
        "r1@example.com": SuppressionReason.hard_bounce,
        "r3@example.com": SuppressionReason.complaint,
    }


def test_reports_parse_as_the_stdlib_reads_them() -> None:
    # the parser's view of a report agrees with a plain reading of its fields
    data = postfix_dsn("<1.2.0123456789ab@example.org>", "r1@example.com")
    [report] = bounces.parse(data)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert report.message_id == "<1.2.0123456789ab@example.org>"
    assert report.diagnostic == "smtp; 550 5.1.1 <r1@example.com>: Recipient address rejected: User unknown"


def test_a_reports_texts_are_stored_without_control_characters(
    session: Session, settings: Settings, sent: dict[str, Delivery]
) -> None:
    """Issue 11 item 7: the remote server's words end up in `newsletter suppressions list` and stats."""
    row = sent["r2@example.com"]
    data = postfix_dsn(row.message_id or "", "r2@example.com").replace(
        b"User unknown", b"User \x1b[2J\x1b]0;pwned\x07unknown\x9b"
    )
    [outcome] = bounces.ingest(session, settings, data)
    session.commit()
    assert outcome.result == "suppressed"
    session.expire_all()
    texts = [
        *(s.detail or "" for s in session.scalars(select(Suppression))),
        *(e.detail or "" for e in session.scalars(select(Event).where(Event.type == EventType.bounce))),
        session.get(Delivery, row.id).smtp_text or "",  # type: ignore[union-attr]
    ]
    assert all("User [2J]0;pwnedunknown" in text for text in texts), texts
    assert not any(ch in text for text in texts for ch in "\x1b\x07\x9b")
