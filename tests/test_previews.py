"""Preview and test send: the message as sent, for a sample recipient, recorded nowhere."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import digests, previews, rendering
from newsletter.addresses import InvalidEmail
from newsletter.config import Settings
from newsletter.dkim import signer_for
from newsletter.mailer import MemoryMailer, get_mailer
from newsletter.models import Campaign, Delivery, Link
from newsletter.tokens import TokenPurpose, Tokens
from tests.factories import make_list, make_subscriber, publish_sample
from tests.smtpserver import RecordingSMTPServer


def nothing_recorded(session: Session) -> bool:
    return all(session.scalar(select(func.count()).select_from(t)) == 0 for t in (Campaign, Delivery, Link))


def test_preview_is_personalised_for_a_sample_recipient_and_links_work(session: Session, settings: Settings) -> None:
    weekly = make_list(session, slug="weekly", name="The Weekly")
    digest = publish_sample(session)
    preview = previews.preview_digest(session, settings, digest.slug)
    assert preview.list_slug == "weekly"
    assert preview.subject == digest.title
    for part in (preview.html, preview.text):
        assert not any(placeholder in part for placeholder in rendering.PLACEHOLDERS)
        assert previews.SAMPLE_NAME in part
        assert preview.unsubscribe_url in part
        assert f"{settings.base_url}/preferences/" in part
    assert preview.unsubscribe_url.startswith(f"{settings.base_url}/unsubscribe/")
    for item in digest.items:  # untracked: straight to the articles, no pixel
        assert f'href="{item.url}"' in preview.html
    assert "/c/" not in preview.html and "/o/" not in preview.html
    message = email.message_from_bytes(preview.message, policy=email.policy.default)
    assert message["List-Unsubscribe"] == f"<{preview.unsubscribe_url}>"
    assert message["To"] == f"{previews.SAMPLE_NAME} <{previews.SAMPLE_EMAIL}>"
    assert message["X-Newsletter-Test"] is None
    assert weekly.postal_address in preview.html
    assert nothing_recorded(session)


def test_tracked_preview_is_what_a_campaign_sends(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    preview = previews.preview_digest(session, settings, digest.slug, "weekly", tracking=True)
    assert f"{settings.base_url}/c/" in preview.html and f"{settings.base_url}/o/" in preview.html
    assert set(preview.links.values()) >= {item.url for item in digest.items}
    assert nothing_recorded(session)


def test_preview_errors(session: Session, settings: Settings) -> None:
    digest = publish_sample(session)
    with pytest.raises(previews.NoListToPreview, match="no mailing list yet"):
        previews.preview_digest(session, settings, digest.slug)
    make_list(session, slug="weekly")
    with pytest.raises(digests.DigestNotFound, match="no digest with slug 'nope'"):
        previews.preview_digest(session, settings, "nope")


def test_test_send_goes_through_smtp_marked_and_unrecorded(
    session: Session, make_settings: Callable[..., Settings], smtp_server: RecordingSMTPServer
) -> None:
    settings = make_settings(smtp_url=smtp_server.url)
    weekly = make_list(session, slug="weekly")
    editor = make_subscriber(session, weekly, "editor@example.com", "Dana")
    digest = publish_sample(session)
    preview, result = previews.send_test(
        session, settings, get_mailer(settings.smtp_url, settings.outbox_dir), digest.slug, "Editor@Example.com"
    )
    assert result.ok
    (received,) = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("editor@example.com",)
    message = received.message
    assert message["Subject"] == f"[TEST] {digest.title}"
    assert message["X-Newsletter-Test"] == "yes"
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "Hello Dana," in content  # the subscriber's own name and tokens: their links work
    own = Tokens(settings.secret_key).make(TokenPurpose.unsubscribe, editor.id, weekly.id, bound_to=editor.created_at)
    assert f"/unsubscribe/{own}" in content  # bound to the editor's row, as a campaign's links are
    assert f'href="{digest.items[0].url}"' in content and "/c/" not in content
    assert preview.recipient == "editor@example.com"
    assert nothing_recorded(session)


def test_test_sends_have_distinct_message_ids(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    mailer = MemoryMailer()
    for _ in range(2):
        previews.send_test(session, settings, mailer, digest.slug, "a@example.com")
    ids = {email.message_from_bytes(m.data, policy=email.policy.default)["Message-ID"] for m in mailer.sent}
    assert len(ids) == 2


def test_test_send_refuses_bad_address_and_reports_unreachable_server(
    session: Session, make_settings: Callable[..., Settings]
) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    settings = make_settings(smtp_url="smtp://127.0.0.1:1?timeout=2")
    mailer = get_mailer(settings.smtp_url, settings.outbox_dir)
    with pytest.raises(InvalidEmail):
        previews.send_test(session, settings, mailer, digest.slug, "not an address")
    with pytest.raises(
        previews.TestSendFailed, match=re.escape("not sent: no SMTP server reachable: smtp://127.0.0.1:1")
    ):
        previews.send_test(session, settings, mailer, digest.slug, "a@example.com")
    assert nothing_recorded(session)


def test_test_send_with_dkim_verifies(session: Session, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    settings = make_settings(dkim_domain="example.org", dkim_selector="s1", dkim_key_file=pem)
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    mailer = MemoryMailer()
    previews.send_test(session, settings, mailer, digest.slug, "a@example.com")
    record = signer_for(settings).dns_record().encode()  # type: ignore[union-attr]
    data = mailer.sent[0].data
    assert data.startswith(b"X-Newsletter-Test: yes\r\nDKIM-Signature:")
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)


def test_message_is_parseable_email(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    preview = previews.preview_digest(session, settings, digest.slug, test=True)
    parsed = email.message_from_bytes(preview.message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    assert preview.subject.startswith("[TEST] ")
