"""Mailing lists: create, change, delete, and count who is on them."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.models import MailingList, OptIn, Subscription, SubscriptionStatus, Visibility
from newsletter.subscriptions import normalise_email

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class InvalidList(ValueError):
    """A list definition that cannot be stored; the message names the field."""


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
) -> MailingList:
    if not SLUG.match(slug):
        raise InvalidList(f"slug {slug!r}: use lowercase letters, digits and dashes (at most 100)")
    if session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is not None:
        raise InvalidList(f"a list with slug {slug!r} already exists")
    clean_name = " ".join(name.split())
    if not clean_name:
        raise InvalidList("name: must not be empty")
    mailing_list = MailingList(
        slug=slug,
        name=clean_name[:255],
        from_email=normalise_email(from_email),
        from_name=" ".join(from_name.split())[:255],
        reply_to=normalise_email(reply_to) if reply_to else None,
        opt_in=opt_in,
        visibility=visibility,
        postal_address=postal_address.strip(),
        description=description.strip(),
        tracking=tracking,
        theme={},
        form_fields=[],
        cors_origins=[],
    )
    session.add(mailing_list)
    session.flush()
    return mailing_list


def subscription_counts(session: Session, list_id: int) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in SubscriptionStatus), 0)
    rows = session.execute(
        select(Subscription.status, func.count()).where(Subscription.list_id == list_id).group_by(Subscription.status)
    )
    for status, count in rows:
        counts[SubscriptionStatus(status).value] = count
    return counts
