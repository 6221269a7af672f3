"""A campaign's message prepared once per process, and each recipient's copy of it in wire form.

`PreparedCampaign` holds everything per campaign (the pre-encoded message, token makers, Message-ID form,
the envelope sender); per recipient only tokens and the name are substituted into it (see messages.py).
Previews build one on an unsaved campaign, so a preview's bytes are those a real send produces.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import object_session

from newsletter import digests, i18n, links, rendering, templates, verp
from newsletter.config import Settings
from newsletter.delivery.ledger import Claimed, MessageIds
from newsletter.dkim import DkimSigner
from newsletter.errors import Conflict
from newsletter.messages import CampaignMessage, Recipient
from newsletter.models import Campaign
from newsletter.tokens import TokenPurpose, Tokens


class CampaignNotRendered(Conflict):
    def __init__(self, campaign_id: int) -> None:
        super().__init__(f"campaign {campaign_id} has not been rendered")


class NothingWanted(Exception):
    """The subscriber chose sections and this digest has none of them: nothing to send."""


class PreparedCampaign:
    """Everything per-campaign the send loop needs, built once per campaign per process."""

    def __init__(self, settings: Settings, campaign: Campaign, tokens: Tokens, dkim: DkimSigner | None) -> None:
        if campaign.html is None or campaign.text is None:
            raise CampaignNotRendered(campaign.id)
        primary = campaign.lists[0]
        self.settings = settings
        self.campaign_id = campaign.id
        self.tokens = tokens
        self.tracking = primary.tracking
        domain = primary.from_email.rpartition("@")[2]
        self.ids = MessageIds(campaign.id, domain, MessageMacs.from_settings(settings))
        self.envelope_from = envelope_address(primary.from_email)
        self._verp = verp.address_of(primary, settings.verp_address)
        # The shapes of links.unsubscribe_url / preferences_url, their constant part joined once per campaign
        self._unsubscribe = f"{settings.base_url}{links.UNSUBSCRIBE}"
        self._preferences = f"{settings.base_url}{links.PREFERENCES}"
        self._message_options: dict[str, Any] = {
            "subject": campaign.subject,
            "from_name": primary.from_name or primary.name,
            "from_email": primary.from_email,
            "reply_to": primary.reply_to,
            "list_id": f"{primary.name} <{primary.slug}.{domain}>",
            "unsubscribe_mailto": settings.list_unsubscribe_mailto,
            "headers": {"X-Campaign-ID": str(campaign.id)},
            "dkim": dkim,
            # "Hello reader," for subscribers without a name, in the email's language
            "name_fallback": i18n.translations(
                i18n.email_language(campaign.digest.language if campaign.digest else None, primary.language)
            ).gettext(rendering.NAME_FALLBACK),
        }
        self.message = CampaignMessage(html=campaign.html, text=campaign.text, **self._message_options)
        # Subscribers who chose sections get a copy with only those; each distinct choice is rendered once
        # per process, on first use, with the campaign's registered links. What that needs is copied out
        # of the ORM objects now: this object outlives the session that loaded them.
        # (A preview's unsaved campaign has no digest row: it never has variants.)
        self._digest = digests.from_stored(campaign.digest) if campaign.digest is not None else None
        self._offered = (
            frozenset(item.section for item in self._digest.items if item.section) if self._digest else frozenset()
        )
        self._positions = {link.url: link.position for link in campaign.links}
        self._look = rendering.ListLook.of(primary)
        session = object_session(campaign)
        self._template = templates.template_source(session, campaign.template_id) if session else None
        self._variants: dict[frozenset[str], CampaignMessage | None] = {}
        # A sequence step's list and step, for its `sequence.step_sent` events (set by sending.prepare).
        self.step: dict[str, Any] | None = None

    def envelope_for(self, delivery_id: int) -> str:
        """The envelope sender (return path) of one delivery: its VERP address, or the list's From."""
        return verp.return_path(self.tokens, self._verp, delivery_id) if self._verp else self.envelope_from

    def message_for(self, sections: list[str] | None) -> CampaignMessage | None:
        """The message for a subscriber's chosen sections; None when this digest has none of them."""
        if sections is None:
            return self.message
        wanted = self._offered & frozenset(sections)
        if wanted == self._offered:
            return self.message
        if wanted not in self._variants:
            self._variants[wanted] = self._render_variant(wanted)
        return self._variants[wanted]

    def _render_variant(self, wanted: frozenset[str]) -> CampaignMessage | None:
        if not wanted:
            return None  # an issue of only unsectioned items still goes to everyone: see `offered` above
        # Items without a section are general news: everyone who gets the issue gets them.
        assert self._digest is not None  # `_offered` is empty without one
        items = tuple(item for item in self._digest.items if item.section is None or item.section in wanted)
        rendered = rendering.render_for_list(
            self._digest.model_copy(update={"items": items}),
            self._look,
            base_url=self.settings.base_url,
            positions=self._positions,
            template_source=self._template,
        )
        return CampaignMessage(html=rendered.html, text=rendered.text, **self._message_options)

    def render(self, claimed: Claimed) -> bytes:
        """The recipient's message; raises messages.InvalidHeader when it cannot be written safely."""
        make, subscriber, created = self.tokens.make, claimed.subscriber_id, claimed.created_at
        # Bound to the subscriber's row (tokens.binding): never to act on a later row that gets the same id.
        unsubscribe = self._unsubscribe + make(TokenPurpose.unsubscribe, subscriber, claimed.list_id, bound_to=created)
        values = {
            rendering.NAME: claimed.name,
            rendering.UNSUBSCRIBE_URL: unsubscribe,
            rendering.PREFERENCES_URL: self._preferences + make(TokenPurpose.preferences, subscriber, bound_to=created),
        }
        if self.tracking:
            values[rendering.TRACK] = make(TokenPurpose.track, claimed.delivery_id)
        message = self.message_for(claimed.sections)
        if message is None:
            raise NothingWanted
        return message.render(
            Recipient(
                email=claimed.email,
                name=claimed.name or None,
                message_id=self.ids.of(claimed.delivery_id),
                values=values,
                unsubscribe_url=unsubscribe,
            )
        )


class MessageMacs:
    """The keyed part of each delivery's Message-ID: a bounce or complaint must quote the Message-ID of the
    very delivery it is about, which only its recipient (or their provider) ever saw (see bounces.py).

    Keyed once per key and copied per message, as tokens.py does: the send loop composes thousands of
    messages a second. Old keys only verify, so reports about mail sent before a key rotation still count.
    """

    def __init__(self, secret_key: str, old_keys: Sequence[str] = ()) -> None:
        keys = [secret_key, *(k for k in old_keys if k != secret_key)]
        self._macs = [
            hmac.new(hashlib.sha256(b"newsletter.message-id:" + key.encode()).digest(), digestmod=hashlib.sha256)
            for key in keys
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageMacs:
        return cls(settings.secret_key, settings.old_secret_keys)

    def __call__(self, campaign_id: int, delivery_id: int, key: int = 0) -> str:
        mac = self._macs[key].copy()
        mac.update(b"%d.%d" % (campaign_id, delivery_id))
        return mac.hexdigest()[:MESSAGE_MAC_LENGTH]

    def verify(self, campaign_id: int, delivery_id: int, value: str) -> bool:
        return any(hmac.compare_digest(self(campaign_id, delivery_id, key), value) for key in range(len(self._macs)))


MESSAGE_MAC_LENGTH = 20  # hex digits: 80 bits, out of reach of guessing by mail


def envelope_address(email: str) -> str:
    """The SMTP envelope form: an internationalised domain in IDNA (the local part needs SMTPUTF8 anyway)."""
    local, _, domain = email.rpartition("@")
    if domain.isascii():
        return email
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return email  # the mailer refuses it, and the row is failed with the server's or its own reason
