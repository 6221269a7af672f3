"""Show a stored digest exactly as a list's subscribers get it, and send one real test message of it.

The message is built by the sending code itself, `delivery.composing.PreparedCampaign` on an unsaved campaign, so
headers, placeholder substitution and DKIM are the ones a real send uses; nothing is written to the
database (no campaign, no ledger row, no links).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import digests, links, rendering, templates
from newsletter.addresses import normalise_email
from newsletter.config import Settings
from newsletter.delivery.composing import PreparedCampaign
from newsletter.delivery.ledger import Claimed
from newsletter.dkim import signer_for
from newsletter.errors import NotFound, Unavailable
from newsletter.lists import get_list
from newsletter.mailer import Mailer, SendResult
from newsletter.models import Campaign, MailingList, Subscriber
from newsletter.smtpservers import parse_smtp_urls
from newsletter.tokens import Tokens

__all__ = [
    "SAMPLE_EMAIL",
    "SAMPLE_NAME",
    "TEST_HEADER",
    "TEST_SUBJECT_PREFIX",
    "NoListToPreview",
    "Preview",
    "TestSendFailed",
    "preview_digest",
    "send_test",
]

SAMPLE_EMAIL = "reader@example.com"
SAMPLE_NAME = "Sample Reader"
TEST_SUBJECT_PREFIX = "[TEST] "
TEST_HEADER = ("X-Newsletter-Test", "yes")
# What the tokens of a preview to an address that is nobody's are bound to: they name subscriber 0, no row.
NO_SUBSCRIBER_CREATED_AT = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class NoListToPreview(NotFound):
    def __init__(self) -> None:
        super().__init__("there is no mailing list yet: create one with `newsletter lists create` to preview for it")


class TestSendFailed(Unavailable):
    """The test message was not accepted; the message gives the server's answer."""


@dataclass(frozen=True)
class Preview:
    """One digest as one recipient of one list gets it; `html` and `text` are the decoded parts of `message`."""

    digest_slug: str
    list_slug: str
    subject: str
    html: str
    text: str
    message: bytes  # the complete MIME message, CRLF line endings, DKIM-signed when configured
    envelope_from: str
    recipient: str
    unsubscribe_url: str
    links: Mapping[str, str]  # href in the HTML -> the digest's URL it leads to (differs when tracked)


def preview_digest(
    session: Session,
    settings: Settings,
    digest_slug: str,
    list_slug: str | None = None,
    *,
    template: str | None = None,
    subject: str | None = None,
    tracking: bool = False,
    recipient_email: str = SAMPLE_EMAIL,
    recipient_name: str = SAMPLE_NAME,
    test: bool = False,
) -> Preview:
    """Render a stored digest for a list as sent, personalised for a sample recipient.

    Without `list_slug` the oldest list is used. `tracking=False` (the default, for people looking at a
    preview or a test) keeps links pointing at the articles: click tracking only redirects to links a real
    campaign registered. `tracking=True` gives the bytes a real send produces, for the pre-send check.
    """
    digest = digests.get_published(session, digest_slug)
    mailing_list = get_list(session, list_slug) if list_slug else _default_list(session)
    chosen = templates.get_template(session, template) if template else templates.default_for(session, [mailing_list])
    source = chosen.source if chosen else None
    rendered = rendering.render_for_list(
        digests.from_stored(digest),
        mailing_list,
        base_url=settings.base_url if tracking else None,
        template_source=source,
        site_url=settings.base_url,  # "view in your browser" and "subscribe" as the real copy has them
    )
    title = " ".join((subject or digest.title).split())
    # Never added to the session: an unsaved campaign only carries what PreparedCampaign reads.
    campaign = Campaign(
        id=0,
        subject=(TEST_SUBJECT_PREFIX if test else "") + title,
        html=rendered.html,
        text=rendered.text,
        lists=[mailing_list],
    )
    prepared = PreparedCampaign(settings, campaign, Tokens(settings.secret_key), signer_for(settings))
    email_address = normalise_email(recipient_email)
    message = _message_for(session, prepared, mailing_list.id, email_address, recipient_name)
    if test:
        # Prepended, not signed: DKIM signs a fixed header list, so the signature stays valid.
        message = f"{TEST_HEADER[0]}: {TEST_HEADER[1]}\r\n".encode("ascii") + message
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return Preview(
        digest_slug=digest.slug,
        list_slug=mailing_list.slug,
        subject=str(parsed["Subject"]),
        html=_part(parsed, "html"),
        text=_part(parsed, "plain"),
        message=message,
        envelope_from=prepared.envelope_from,
        recipient=email_address,
        unsubscribe_url=_unsubscribe_url(parsed),
        links=_destinations(rendered, settings.base_url if tracking and mailing_list.tracking else None),
    )


def _destinations(rendered: rendering.RenderedEmail, tracked_at: str | None) -> dict[str, str]:
    """Each href of the rendered email and the URL it leads to: tracked ones are numbered as a campaign's
    registered links would be."""
    if tracked_at is None:
        return {url: url for url in rendered.links}
    return {links.click_url(tracked_at, rendering.TRACK, n): url for n, url in enumerate(rendered.links, 1)}


def _message_for(session: Session, prepared: PreparedCampaign, list_id: int, email_address: str, name: str) -> bytes:
    """The prepared campaign's message for one address, as the batch loop would write it."""
    # A subscriber's own tokens make unsubscribe and preferences work in a test sent to them; anyone else
    # gets tokens for subscriber 0, which the web app answers with "this link is not valid".
    known = session.execute(
        select(Subscriber.id, Subscriber.created_at).where(Subscriber.email == email_address)
    ).first()
    subscriber_id, created_at = known if known is not None else (0, NO_SUBSCRIBER_CREATED_AT)
    claimed = Claimed(
        # A random ledger id keeps each preview's Message-ID unique, so mail clients never merge two tests.
        delivery_id=secrets.randbelow(2**40) + 1,
        subscriber_id=subscriber_id,
        list_id=list_id,
        email=email_address,
        name=name,
        attempts=0,
        created_at=created_at,
    )
    return prepared.render(claimed)


def send_test(
    session: Session,
    settings: Settings,
    mailer: Mailer,
    digest_slug: str,
    to: str,
    list_slug: str | None = None,
    *,
    template: str | None = None,
) -> tuple[Preview, SendResult]:
    """Send one message of the digest to `to`, marked as a test and recorded nowhere; raise if refused.

    Links are untracked (a test has no campaign to count clicks for) and there is no open pixel.
    """
    address = normalise_email(to)
    subscriber_name = session.scalar(select(Subscriber.name).where(Subscriber.email == address))
    preview = preview_digest(
        session,
        settings,
        digest_slug,
        list_slug,
        template=template,
        recipient_email=address,
        recipient_name=subscriber_name or "",
        test=True,
    )
    with mailer.session() as smtp:
        result = smtp.send(preview.envelope_from, address, preview.message)
    if not result.ok:
        reason = result.text if result.code == 0 else f"{result.code} {result.text}"
        raise TestSendFailed(f"test message to {address} not sent: {reason}")
    return preview, result


def destination(settings: Settings) -> str:
    """Where the configured mailer sends, for people (passwords left out)."""
    if settings.smtp_url:
        return ", ".join(server.display for server in parse_smtp_urls(settings.smtp_url))
    return f"the outbox directory {settings.outbox_dir}"


def _default_list(session: Session) -> MailingList:
    mailing_list = session.scalar(select(MailingList).order_by(MailingList.id).limit(1))
    if mailing_list is None:
        raise NoListToPreview()
    return mailing_list


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    return "" if part is None else str(part.get_content())


def _unsubscribe_url(message: EmailMessage) -> str:
    header = str(message.get("List-Unsubscribe", ""))
    return header.split(",")[0].strip().strip("<>")
