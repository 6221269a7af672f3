"""Digests through the real pipeline (create_campaign -> start -> send_batch -> SMTP): the bytes subscribers get."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import deliverability, delivery, digests
from newsletter.config import Settings
from newsletter.delivery import sending
from newsletter.dkim import DkimSigner
from newsletter.mailer import get_mailer
from newsletter.models import Delivery, Link, Subscriber
from newsletter.tokens import TokenPurpose, Tokens
from tests.factories import SAMPLE_DIGEST, make_list, make_subscriber
from tests.smtpserver import ReceivedMessage, RecordingSMTPServer

DIGESTS = Path(__file__).parent / "digests"
FIXTURES = {"sample": SAMPLE_DIGEST, "ten-items": DIGESTS / "ten-items.yaml"}
PEOPLE = [("aigerim@example.com", "Aigerim Sadykova"), ("noname@example.com", ""), ("dana@example.org", "Dana & Co")]


@pytest.fixture
def dkim_settings(
    make_settings: Callable[..., Settings], engine: object, smtp_server: RecordingSMTPServer, tmp_path: Path
) -> Settings:
    key = rsa.generate_private_key(65537, 2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return make_settings(
        database_url=engine.url.render_as_string(hide_password=False),  # type: ignore[attr-defined]
        smtp_url=smtp_server.url,
        dkim_domain="example.org",
        dkim_selector="news",
        dkim_key_file=pem,
    )


def send_through_pipeline(
    session: Session, sessions: sessionmaker[Session], settings: Settings, smtp: RecordingSMTPServer, fixture: Path
) -> tuple[int, list[ReceivedMessage]]:
    weekly = make_list(session, slug="weekly", name="Kazakhstan in Foreign Media", from_email="digest@example.org")
    for address, name in PEOPLE:
        make_subscriber(session, weekly, address, name)
    stored, _ = digests.publish(session, digests.load_digest(fixture))
    campaign = delivery.create_campaign(session, digest_slug=stored.slug, list_slugs=["weekly"])
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    mailer = get_mailer(settings.smtp_url, settings.outbox_dir)
    for batch in ranges:
        sending.send_batch(sessions, settings, mailer, batch.campaign_id, batch.first_id, batch.last_id)
    return campaign.id, smtp.wait_for(len(PEOPLE))


def html_of(received: ReceivedMessage) -> str:
    part = received.message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def text_of(received: ReceivedMessage) -> str:
    part = received.message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.mark.skipif(shutil.which("spamassassin") is None, reason="needs spamassassin")
@pytest.mark.parametrize("fixture", list(FIXTURES), ids=list(FIXTURES))
def test_sent_messages_score_low_and_stay_small(
    session: Session,
    sessions: sessionmaker[Session],
    dkim_settings: Settings,
    smtp_server: RecordingSMTPServer,
    fixture: str,
    output_dir: Path,
) -> None:
    _, received = send_through_pipeline(session, sessions, dkim_settings, smtp_server, FIXTURES[fixture])
    data = received[0].data
    (output_dir / f"sent-{fixture}-{session.get_bind().dialect.name}.eml").write_bytes(data)  # for a person to look at
    assert data.startswith(b"DKIM-Signature:")
    assert received[0].message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    size = len(html_of(received[0]).encode("utf-8"))
    assert size <= 60_000, f"{fixture}: HTML is {size} bytes"
    spam = deliverability.spam_score(data)
    assert spam.score <= 0.5, f"{fixture}: SpamAssassin {spam.score}: {spam.rules}"


def test_dkim_signature_of_sent_messages_verifies(
    session: Session, sessions: sessionmaker[Session], dkim_settings: Settings, smtp_server: RecordingSMTPServer
) -> None:
    _, received = send_through_pipeline(session, sessions, dkim_settings, smtp_server, SAMPLE_DIGEST)
    assert dkim_settings.dkim_key_file is not None
    signer = DkimSigner.from_file("example.org", "news", dkim_settings.dkim_key_file)
    record = signer.dns_record().encode()
    for message in received:
        assert dkim.verify(message.data, dnsfunc=lambda name, timeout=5: record)


@pytest.mark.parametrize("fixture", list(FIXTURES), ids=list(FIXTURES))
def test_placeholders_are_substituted_for_each_recipient(
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    make_settings: Callable[..., Settings],
    smtp_server: RecordingSMTPServer,
    fixture: str,
) -> None:
    settings = make_settings(database_url=settings.database_url, smtp_url=smtp_server.url)
    campaign_id, received = send_through_pipeline(session, sessions, settings, smtp_server, FIXTURES[fixture])
    tokens = Tokens(settings.secret_key)
    base = settings.base_url
    ledger = session.execute(
        select(Delivery.id, Delivery.subscriber_id, Delivery.list_id).where(Delivery.campaign_id == campaign_id)
    ).all()
    by_subscriber = {subscriber_id: (delivery_id, list_id) for delivery_id, subscriber_id, list_id in ledger}
    links = dict(session.execute(select(Link.position, Link.url).where(Link.campaign_id == campaign_id)).all())
    stored = digests.load_digest(FIXTURES[fixture])
    assert {item.url for item in stored.items} <= set(links.values())
    ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
    created = dict(session.execute(select(Subscriber.email, Subscriber.created_at)).all())
    assert len(received) == len(PEOPLE)
    for message in received:
        (address,) = message.rcpt_tos
        name = dict(PEOPLE)[address]
        delivery_id, list_id = by_subscriber[ids[address]]
        html, text = html_of(message), text_of(message)
        # bound to the subscriber's row (issue 11 item 1)
        bound = created[address]
        leave = tokens.make(TokenPurpose.unsubscribe, ids[address], list_id, bound_to=bound)
        unsubscribe = f"{base}/unsubscribe/{leave}"
        preferences = f"{base}/preferences/{tokens.make(TokenPurpose.preferences, ids[address], bound_to=bound)}"
        track = tokens.make(TokenPurpose.track, delivery_id)
        greeting = name or "reader"  # the fallback for subscribers without a name
        assert f"Hello {greeting}," in text
        assert f"Hello {greeting.replace('&', '&amp;')}," in html
        assert message.message["List-Unsubscribe"] == f"<{unsubscribe}>"
        for part in (html, text):
            assert "%%" not in part
            assert unsubscribe in part and preferences in part
        assert f'src="{base}/o/{track}"' in html
        hrefs = set(re.findall(rf'href="{re.escape(base)}/c/([^"]+)\.(\d+)"', html))
        assert {token for token, _ in hrefs} == {track}  # every tracked link carries this delivery's token
        assert {links[int(position)] for _, position in hrefs} == set(links.values())
        for url in links.values():
            assert f'href="{url}"' not in html  # no link bypasses tracking
