"""`newsletter demo`: the embedded quick start, from an empty directory to a sent digest in the outbox.

An entry point like every command: it drives the pipeline through worker/ as `celery` would, in-process."""

from __future__ import annotations

import email
import email.policy
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import delivery, digests, links, lists, rendering, subscriptions, users
from newsletter.cli.console import settings as get_settings
from newsletter.config import Settings
from newsletter.db import get_engine, session_scope
from newsletter.delivery import progress
from newsletter.migrate import upgrade
from newsletter.models import (
    Campaign,
    CampaignStatus,
    DeliveryStatus,
    MailingList,
    OptIn,
    Role,
    SubscriptionSource,
    User,
    campaign_lists,
)

SAMPLE_DIGEST = Path(__file__).resolve().parent.parent / "samples" / "sample-digest.md"
DEMO_LIST = "demo"
DEMO_ADMIN = "demo"
FIRST_NAMES = (
    "Aigerim",
    "Bauyrzhan",
    "Chen",
    "Dana",
    "Erlan",
    "Fatima",
    "Gulnara",
    "Hiroshi",
    "Ines",
    "Jamal",
    "Kamila",
    "Lars",
    "Madina",
    "Nurlan",
    "Olga",
    "Pedro",
    "Quentin",
    "Raushan",
    "Saule",
    "Timur",
    "Ulan",
    "Vera",
    "Wei",
    "Ximena",
    "Yerlan",
    "Zarina",
)
DOMAINS = ("example.com", "example.org", "example.net")


def demo_addresses(count: int) -> list[tuple[str, str]]:
    people = []
    for index in range(count):
        first = FIRST_NAMES[index % len(FIRST_NAMES)]
        suffix = "" if index < len(FIRST_NAMES) else str(index // len(FIRST_NAMES) + 1)
        people.append((f"{first.lower()}{suffix}@{DOMAINS[index % len(DOMAINS)]}", first))
    return people


def _demo_list(session: Session) -> MailingList:
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == DEMO_LIST))
    if mailing_list is None:
        mailing_list = lists.create_list(
            session,
            slug=DEMO_LIST,
            name="Kazakhstan in the World Press",
            from_email="digest@example.org",
            from_name="Kazakhstan in the World Press",
            opt_in=OptIn.double,
            postal_address="Demo Publishing, 1 Example Street, Astana 010000, Kazakhstan",
            description="A weekly round-up of what foreign media wrote about Kazakhstan.",
        )
    return mailing_list


def run(settings: Settings, *, subscribers: int, console: Console) -> None:
    # Deferred like the other commands that enqueue (cli/campaigns.py says why): worker.app reads the
    # settings when imported, and a bad setting must stay a one-line error.
    from worker import tasks

    upgrade(get_engine(settings))
    digest = digests.load_digest(SAMPLE_DIGEST)
    with session_scope(settings) as session:
        mailing_list = _demo_list(session)
        for address, name in demo_addresses(subscribers):
            subscriber = subscriptions.get_or_create_subscriber(session, address, name)
            subscriptions.add_subscription(
                session, mailing_list, subscriber, source=SubscriptionSource.admin, confirmed=True
            )
        stored, _ = digests.publish(session, digest)
        admin_password = _demo_admin(session)
        previous = session.scalar(
            select(Campaign)
            .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
            .where(
                Campaign.digest_id == stored.id,
                campaign_lists.c.list_id == mailing_list.id,
                Campaign.status != CampaignStatus.cancelled,
            )
        )
        campaign_id = previous.id if previous else None
        if previous is None:
            campaign_id = delivery.create_campaign(session, digest_slug=stored.slug, list_slugs=[DEMO_LIST]).id
    assert campaign_id is not None
    if previous is None:
        tasks.start_campaign.delay(campaign_id)

    with session_scope(settings) as session:
        campaign = delivery.get_campaign(session, campaign_id)
        counts = progress.tally(session, campaign_id).counts
        preview = write_preview(settings, campaign)
    outbox = settings.outbox_dir.resolve()
    files = sorted(outbox.glob("*.eml"))
    if previous is not None:
        console.print(
            f"Digest [bold]{stored.slug}[/] was already sent to list [bold]{DEMO_LIST}[/] by campaign "
            f"{campaign_id}: nobody gets a second copy."
        )
    else:
        console.print(f"Sent digest [bold]{stored.slug}[/] to list [bold]{DEMO_LIST}[/] (campaign {campaign_id}).")
    console.print(
        f"  ledger: {counts[DeliveryStatus.sent]} sent, {counts[DeliveryStatus.failed]} failed, "
        f"{counts[DeliveryStatus.pending]} pending, {counts[DeliveryStatus.skipped]} skipped"
    )
    console.print(f"  messages: {len(files)} .eml files in {outbox}")
    console.print(f"  preview:  {preview}")
    if files:
        sample = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
        console.print(f"  latest:   To: {sample['To']}  Subject: {sample['Subject']}")
    console.print(f"Look at it:  python3 -m webbrowser file://{preview}")
    console.print(how_to_open_the_admin(admin_password))


def how_to_open_the_admin(password: str | None) -> str:
    if password is not None:
        signing_in = f"user [bold]{DEMO_ADMIN}[/], password [bold]{password}[/] (shown this once)"
    else:
        signing_in = f"user [bold]{DEMO_ADMIN}[/] (a new password: newsletter users set-password {DEMO_ADMIN})"
    return (
        "The admin:  [bold]make serve[/] (or: newsletter serve), then open http://127.0.0.1:8000/admin and sign "
        f"in as {signing_in}"
    )


def _demo_admin(session: Session) -> str | None:
    """An admin to sign in to the web UI with; its password is made here and returned the first time only."""
    if session.scalar(select(User.id).where(User.name == DEMO_ADMIN)) is not None:
        return None
    password = secrets.token_urlsafe(12)  # 16 characters, ~96 bits: the demo is also reachable on a LAN
    users.create_user(session, DEMO_ADMIN, Role.admin, email="editor@example.org", password=password)
    return password


def write_preview(settings: Settings, campaign: Campaign) -> Path:
    """The campaign's HTML as a sample recipient sees it, with personal links pointing nowhere real."""
    html = campaign.html or ""
    sample = {
        rendering.NAME: "Aigerim",
        rendering.UNSUBSCRIBE_URL: f"{settings.base_url}{links.UNSUBSCRIBE}preview",
        rendering.PREFERENCES_URL: f"{settings.base_url}{links.PREFERENCES}preview",
        rendering.TRACK: "preview",
    }
    for placeholder, value in sample.items():
        html = html.replace(placeholder, value)
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    path = (settings.outbox_dir / f"preview-campaign-{campaign.id}.html").resolve()
    path.write_text(html, encoding="utf-8")
    return path


def demo(
    subscribers: Annotated[int, typer.Option(help="How many demo subscribers.")] = 36,
) -> None:
    """Embedded quick start: a SQLite database, a demo list, the sample digest, sent to the outbox."""
    # The demo prints only its bundled sample, and styles it with markup: unlike every other command's.
    console = Console(highlight=False, soft_wrap=True)
    run(get_settings(), subscribers=subscribers, console=console)
