"""Mailing lists: create, change, delete, and count who is on them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter import i18n, rendering
from newsletter.addresses import InvalidEmail, normalise_email
from newsletter.errors import Conflict, Invalid, NotFound
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    EmailSequence,
    MailingList,
    OptIn,
    SequenceStep,
    Subscription,
    SubscriptionStatus,
    Visibility,
    campaign_lists,
    digest_campaigns,
)
from newsletter.text import single_line

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
# Slugs that name a page of the admin's rather than a list: /admin/lists/new is the form for a new list, so
# a list called "new" could never be opened there. tests/test_admin_lists.py checks this against the routes.
RESERVED_SLUGS = frozenset({"new"})


class InvalidList(Invalid):
    """A list definition that cannot be stored; the message names the field."""


class ListInUse(Conflict):
    """The list cannot be deleted now; the message says what holds it."""


THEME_KEYS = ("publication_name", "logo_url", "accent_color", "postal_address")
MAX_CORS_ORIGINS = 50
MAX_FORM_FIELDS = 20
_ORIGIN = re.compile(r"^https?://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def create_list(
    session: Session,
    *,
    slug: str,
    name: str,
    from_email: str,
    from_name: str = "",
    opt_in: OptIn = OptIn.double,
    visibility: Visibility = Visibility.public,
    postal_address: str = "",
    description: str = "",
    reply_to: str | None = None,
    tracking: bool = True,
    theme: Mapping[str, Any] | None = None,
    language: str | None = None,
) -> MailingList:
    _refuse_nul(name=name, from_email=from_email, from_name=from_name, postal_address=postal_address,
                description=description, reply_to=reply_to, language=language)  # fmt: skip
    if not SLUG.match(slug):
        raise InvalidList(f"slug {slug!r}: use lowercase letters, digits and dashes (at most 100)")
    if slug in RESERVED_SLUGS:
        raise InvalidList(f"slug {slug!r}: reserved for the admin's pages; choose another, such as {slug}-digest")
    if session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is not None:
        raise InvalidList(f"a list with slug {slug!r} already exists")
    clean_name = " ".join(single_line(name).split())
    if not clean_name:
        raise InvalidList("name: must not be empty")
    checked_theme = check_theme(theme or {}, list_name=clean_name, postal_address=postal_address.strip())
    checked_language = _check_language(language)
    mailing_list = MailingList(
        slug=slug,
        name=clean_name[:255],
        from_email=_address("from_email", from_email),
        from_name=" ".join(from_name.split())[:255],
        reply_to=_address("reply_to", reply_to) if reply_to else None,
        opt_in=opt_in,
        visibility=visibility,
        postal_address=postal_address.strip(),
        description=description.strip(),
        tracking=tracking,
        theme=checked_theme,
        form_fields=[],
        cors_origins=[],
        language=checked_language,
    )
    session.add(mailing_list)
    session.flush()
    return mailing_list


def _refuse_nul(**fields: str | None) -> None:
    """No text of a list can hold a NUL (PostgreSQL refuses one): named, before anything is stored."""
    for field, value in fields.items():
        if value is not None and "\x00" in value:
            raise InvalidList(f"{field}: contains a NUL character")


def _address(field: str, value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidEmail as exc:
        raise InvalidList(f"{field}: {exc}") from None


def subscription_counts(session: Session, list_id: int) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in SubscriptionStatus), 0)
    rows = session.execute(
        select(Subscription.status, func.count()).where(Subscription.list_id == list_id).group_by(Subscription.status)
    )
    for status, count in rows:
        counts[SubscriptionStatus(status).value] = count
    return counts


def check_theme(theme: Mapping[str, Any], *, list_name: str, postal_address: str) -> dict[str, Any]:
    """Validate a theme the way rendering will use it (the list's name and address fill the gaps)."""
    unknown = sorted(set(theme) - set(THEME_KEYS))
    if unknown:
        raise InvalidList(f"theme: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(THEME_KEYS)}")
    for key, value in theme.items():
        if value is not None and not isinstance(value, str):
            raise InvalidList(f"theme.{key}: must be a string")
        if value is not None and "\x00" in value:
            raise InvalidList(f"theme.{key}: contains a NUL character")
    values = {"publication_name": list_name, "postal_address": postal_address}
    values.update({k: v for k, v in theme.items() if v})
    try:
        rendering.Theme.from_dict(values)
    except ValueError as exc:
        raise InvalidList(f"theme: {exc}") from None
    return {k: v for k, v in theme.items() if v}


def check_cors_origins(origins: Sequence[str]) -> list[str]:
    """The sites that may post the subscribe form from the browser: `https://example.org` (scheme, host,
    optional port; no path) or `*` for any site."""
    clean: list[str] = []
    for raw in origins:
        origin = raw.strip().rstrip("/").lower()
        if not origin:
            continue
        if origin != "*" and not _ORIGIN.match(origin):
            raise InvalidList(
                f"cors_origins: {raw.strip()!r} is not an origin; write it as https://example.org "
                "(scheme and host, an optional :port, no path), or * for any site"
            )
        if origin not in clean:
            clean.append(origin)
    if len(clean) > MAX_CORS_ORIGINS:
        raise InvalidList(f"cors_origins: at most {MAX_CORS_ORIGINS} origins")
    return clean


def parse_form_field(spec: str) -> dict[str, Any]:
    """`NAME[:LABEL[:required]]`, how the CLI and the admin page write a form field, as a form field."""
    name, _, rest = spec.partition(":")
    label, _, flag = rest.rpartition(":") if rest.lower().endswith(":required") else (rest, "", "")
    return {"name": name.strip(), "label": label.strip(), "required": flag.strip().lower() == "required"}


def check_form_fields(fields: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The subscribe form's extra fields, each stored as an attribute: {name, label, required}."""
    clean: list[dict[str, Any]] = []
    for field in fields:
        name = str(field.get("name", "")).strip()
        if not _FIELD_NAME.match(name) or name.lower() in ("email", "name"):
            raise InvalidList(
                f"form_fields: {name!r} cannot name a field; use letters, digits and _ (at most 64, "
                "starting with a letter), and not email or name, which every form has"
            )
        if any(f["name"] == name for f in clean):
            raise InvalidList(f"form_fields: {name!r} appears twice")
        label = " ".join(single_line(str(field.get("label") or name)).split())[:100]
        clean.append({"name": name, "label": label, "required": bool(field.get("required"))})
    if len(clean) > MAX_FORM_FIELDS:
        raise InvalidList(f"form_fields: at most {MAX_FORM_FIELDS} fields")
    return clean


_UNSET: Any = object()


def update_list(
    session: Session,
    slug: str,
    *,
    name: str | None = None,
    description: str | None = None,
    from_email: str | None = None,
    from_name: str | None = None,
    reply_to: str | None = _UNSET,
    opt_in: OptIn | None = None,
    visibility: Visibility | None = None,
    postal_address: str | None = None,
    theme: Mapping[str, Any] | None = None,
    tracking: bool | None = None,
    cors_origins: Sequence[str] | None = None,
    form_fields: Sequence[Mapping[str, Any]] | None = None,
    language: str | None = None,
    verp: bool | None = None,
    verp_address: str | None = _UNSET,
) -> MailingList:
    """Change the given fields of a list (None leaves a field as it is; reply_to=None clears it; a blank
    language clears it: pages then follow the reader's browser; verp_address=None or "" clears it: the
    installation's VERP_ADDRESS applies)."""
    mailing_list = get_list(session, slug)
    _refuse_nul(name=name, description=description, from_email=from_email, from_name=from_name,
                reply_to=reply_to if isinstance(reply_to, str) else None, postal_address=postal_address,
                language=language, verp_address=verp_address if isinstance(verp_address, str) else None)  # fmt: skip
    _set_verp(mailing_list, verp, verp_address)
    if language is not None:
        mailing_list.language = _check_language(language)
    if cors_origins is not None:
        mailing_list.cors_origins = check_cors_origins(cors_origins)
    if form_fields is not None:
        mailing_list.form_fields = check_form_fields(form_fields)
    if name is not None:
        clean_name = " ".join(single_line(name).split())
        if not clean_name:
            raise InvalidList("name: must not be empty")
        mailing_list.name = clean_name[:255]
    if description is not None:
        mailing_list.description = description.strip()
    if from_email is not None:
        mailing_list.from_email = _address("from_email", from_email)
    if from_name is not None:
        mailing_list.from_name = " ".join(from_name.split())[:255]
    if reply_to is not _UNSET:
        mailing_list.reply_to = _address("reply_to", reply_to) if reply_to else None
    if opt_in is not None:
        mailing_list.opt_in = OptIn(opt_in)
    if visibility is not None:
        mailing_list.visibility = Visibility(visibility)
    if postal_address is not None:
        mailing_list.postal_address = postal_address.strip()
    if tracking is not None:
        mailing_list.tracking = tracking
    new_theme = dict(theme) if theme is not None else dict(mailing_list.theme or {})
    mailing_list.theme = check_theme(new_theme, list_name=mailing_list.name, postal_address=mailing_list.postal_address)
    session.flush()
    return mailing_list


def _set_verp(mailing_list: MailingList, verp: bool | None, address: str | None) -> None:
    """Whether the list's messages carry a per-delivery return path (VERP), and from which address."""
    if verp is not None:
        mailing_list.verp = verp
    if address is not _UNSET:
        clean = _address("verp_address", address) if address else None
        if clean is not None and "+" in clean.partition("@")[0]:
            raise InvalidList("verp_address: must be a plain address such as bounces@news.example.org (no +)")
        mailing_list.verp_address = clean


def _check_language(language: str | None) -> str | None:
    try:
        return i18n.check_language(language)
    except i18n.InvalidLanguage as exc:
        raise InvalidList(str(exc)) from None


@dataclass(frozen=True)
class Removal:
    """What deleting a list removes with it: the confirmation page and the commands say so."""

    subscriptions: dict[str, int]  # per status, with their consent records
    sequence_steps: int  # the steps of its welcome sequence (0: it has none)
    sequence_messages: int  # the ledger rows of its sequence: who was sent (or is due) which step


def removal(session: Session, mailing_list: MailingList) -> Removal:
    steps = session.scalar(
        select(func.count(SequenceStep.id)).join(EmailSequence).where(EmailSequence.list_id == mailing_list.id)
    )
    messages = session.scalar(
        select(func.count(Delivery.id)).where(Delivery.campaign_id.in_(_sequence_campaigns(mailing_list.id)))
    )
    return Removal(subscription_counts(session, mailing_list.id), steps or 0, messages or 0)


def _sequence_campaigns(list_id: int) -> Any:
    """The long-lived campaigns of the list's sequence steps, those of steps removed since included."""
    return (
        select(Campaign.id)
        .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
        .where(campaign_lists.c.list_id == list_id, ~digest_campaigns())
    )


def delete_list(session: Session, slug: str) -> Removal:
    """Delete a list, its subscriptions and its welcome sequence (steps, their campaigns and ledger);
    refused while a campaign of a digest to it is running or waiting to run.

    Finished campaigns keep their ledger but lose the link to the list, so delete is also refused when
    any digest's campaign ever went to it: their statistics would lose their audience. A sequence's
    campaigns are the sequence itself (they never finish while it exists), so they go with it.
    """
    mailing_list = get_list(session, slug)
    campaigns = session.execute(
        select(Campaign.id, Campaign.status)
        .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
        .where(campaign_lists.c.list_id == mailing_list.id, digest_campaigns())
        .order_by(Campaign.id)
    ).all()
    active = [cid for cid, status in campaigns if status in _RUNNING]
    if active:
        raise ListInUse(f"list {slug!r} has campaign(s) {', '.join(map(str, active))} sending or scheduled")
    if campaigns:
        raise ListInUse(
            f"list {slug!r} was sent campaign(s) {', '.join(str(c) for c, _ in campaigns)}; "
            "their statistics depend on it, so it cannot be deleted"
        )
    removed = removal(session, mailing_list)
    sequence_campaigns = list(session.scalars(_sequence_campaigns(mailing_list.id)))
    # In the order the foreign keys allow: the sequence (the database cascades to its steps), then the steps'
    # campaigns (to their ledger, links, events, counters and list links), then the list (to subscriptions;
    # the ORM would try to orphan them first).
    session.execute(delete(EmailSequence).where(EmailSequence.list_id == mailing_list.id))
    if sequence_campaigns:
        session.execute(delete(Campaign).where(Campaign.id.in_(sequence_campaigns)))
    session.execute(delete(MailingList).where(MailingList.id == mailing_list.id))
    session.expire_all()
    return removed


_RUNNING = (CampaignStatus.sending, CampaignStatus.paused, CampaignStatus.scheduled, CampaignStatus.draft)


def all_lists(session: Session) -> list[MailingList]:
    return list(session.scalars(select(MailingList).order_by(MailingList.slug)))


class ListNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        super().__init__(f"no list with slug {slug!r}")
        self.slug = slug


def get_list(session: Session, slug: str) -> MailingList:
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None:
        raise ListNotFound(slug)
    return mailing_list
