"""The id a relay gives an accepted message ("250 2.0.0 Ok: queued as ID", SES's "250 Ok ID") is kept on
its ledger row, on both backends, so that a provider's later event about that id finds the row."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import providers
from newsletter.config import Settings
from newsletter.delivery import sending
from newsletter.mailer import SMTPMailer
from newsletter.models import Delivery, DeliveryStatus, Subscriber, Suppression, SuppressionReason
from newsletter.providers import ses
from newsletter.smtpreplies import provider_message_id
from tests.smtpserver import RecordingSMTPServer
from tests.test_delivery_pipeline import planned


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("2.0.0 Ok: queued as 4F2Kx71Qz3z9", "4F2Kx71Qz3z9"),  # postfix, SendGrid
        ("Ok 0102018c5a1b2c3d-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9-000000",
         "0102018c5a1b2c3d-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9-000000"),  # Amazon SES
        ("OK id=1tHxYz-0004Kb-7Q", "1tHxYz-0004Kb-7Q"),  # Exim
        ("2.0.0 Ok: queued as <b2c9e0f1@relay.example>", "b2c9e0f1@relay.example"),
        ("2.0.0 Ok", None),
        ("2.0.0 OK  1764590400 d9443c01a7336-29b5b1c5f3dsi123456ad.301 - gsmtp", None),  # no id of ours to keep
    ],
)  # fmt: skip
def test_provider_message_id_is_read_from_the_relays_reply(reply: str, expected: str | None) -> None:
    assert provider_message_id(reply) == expected


def _by_address(session: Session, campaign_id: int) -> dict[str, Delivery]:
    session.expire_all()
    rows = session.execute(
        select(Subscriber.email, Delivery).join(Subscriber).where(Delivery.campaign_id == campaign_id)
    )
    return {address: row for address, row in rows.all()}


def test_postfix_style_queue_ids_are_kept_on_each_row(
    sessions: sessionmaker[Session], session: Session, settings: Settings, smtp_server: RecordingSMTPServer
) -> None:
    campaign_id, batch = planned(session, settings, 4)
    report = sending.send_batch(
        sessions, settings, SMTPMailer(smtp_server.url), campaign_id, batch.first_id, batch.last_id
    )
    assert report.sent == 4
    received = smtp_server.wait_for(4)
    rows = _by_address(session, campaign_id)
    # the server answered the n-th message it received with "queued as M<n>"
    expected = {message.rcpt_tos[0]: f"M{n}" for n, message in enumerate(received, start=1)}
    assert {address: row.provider_message_id for address, row in rows.items()} == expected
    assert all(row.status == DeliveryStatus.sent for row in rows.values())


def _ses_id(rcpt: str) -> str:
    return "0102018c" + hashlib.sha256(rcpt.encode()).hexdigest()[:8] + "-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9-000000"


def test_an_ses_bounce_finds_the_row_by_the_id_ses_answered_with(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    with RecordingSMTPServer(responses=lambda rcpt: f"250 Ok {_ses_id(rcpt)}", respond_at="data") as relay:
        campaign_id, batch = planned(session, settings, 3)
        sending.send_batch(sessions, settings, SMTPMailer(relay.url), campaign_id, batch.first_id, batch.last_id)
    rows = _by_address(session, campaign_id)
    assert {a: r.provider_message_id for a, r in rows.items()} == {a: _ses_id(a) for a in rows}
    # SES names the message by that id, and by a Message-ID of its own (it replaces ours)
    notification = {
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "bouncedRecipients": [
            {"emailAddress": "r1@example.com", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 no mailbox"}]},
        "mail": {"messageId": _ses_id("r1@example.com"),
                 "commonHeaders": {"messageId": f"<{_ses_id('r1@example.com')}@eu-west-1.amazonses.com>"}},
    }  # fmt: skip
    [outcome] = providers.record(session, settings, ses.parse_message(json.dumps(notification)))
    session.commit()
    assert (outcome.result, outcome.delivery_id) == ("suppressed", rows["r1@example.com"].id)
    session.expire_all()
    assert session.execute(select(Suppression.email, Suppression.reason)).all() == [
        ("r1@example.com", SuppressionReason.hard_bounce)
    ]
    assert _by_address(session, campaign_id)["r2@example.com"].status == DeliveryStatus.sent
