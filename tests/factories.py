"""Factories for the models: small functions that make valid rows with overridable fields."""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter import digests, lists, subscriptions
from newsletter.models import Digest, MailingList, OptIn, Subscriber, Subscription, SubscriptionSource

SAMPLE_DIGEST = Path(__file__).resolve().parent.parent / "newsletter" / "samples" / "sample-digest.md"
_counter = itertools.count(1)


def make_list(session: Session, slug: str | None = None, **fields: object) -> MailingList:
    n = next(_counter)
    values: dict[str, object] = {
        "slug": slug or f"list-{n}",
        "name": f"Weekly Digest {n}",
        "from_email": "news@example.org",
        "from_name": "The Weekly",
        "postal_address": "1 Example Street, Astana",
        "opt_in": OptIn.double,
    }
    values.update(fields)
    return lists.create_list(session, **values)  # type: ignore[arg-type]


def make_subscriber(
    session: Session,
    mailing_list: MailingList | None = None,
    email: str | None = None,
    name: str = "",
    confirmed: bool = True,
) -> Subscriber:
    address = email or f"reader{next(_counter)}@example.com"
    subscriber = subscriptions.get_or_create_subscriber(session, address, name)
    if mailing_list is not None:
        subscriptions.add_subscription(
            session, mailing_list, subscriber, source=SubscriptionSource.admin, confirmed=confirmed
        )
    return subscriber


def make_subscribers(session: Session, mailing_list: MailingList, count: int, prefix: str = "r") -> list[Subscriber]:
    return [make_subscriber(session, mailing_list, f"{prefix}{i}@example.com", f"Reader {i}") for i in range(count)]


def subscription_of(session: Session, subscriber: Subscriber, mailing_list: MailingList) -> Subscription:
    return session.query(Subscription).filter_by(subscriber_id=subscriber.id, list_id=mailing_list.id).one()


def publish_sample(session: Session, path: Path = SAMPLE_DIGEST) -> Digest:
    stored, _ = digests.publish(session, digests.load_digest(path))
    return stored
