"""The `newsletter` command: every admin and editor action, on the same domain functions as the API."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from newsletter import addresses, errors, lists, subscriptions
from newsletter.config import ConfigError, Settings, get_settings
from newsletter.db import get_engine, session_scope
from newsletter.models import (
    CampaignStatus,
    DeliveryStatus,
    MailingList,
    OptIn,
    Role,
    SubscriberStatus,
    SuppressionReason,
    Visibility,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
lists_app = typer.Typer(no_args_is_help=True, help="Mailing lists.")
subscribers_app = typer.Typer(no_args_is_help=True, help="Subscribers: import, export, unsubscribe.")
digests_app = typer.Typer(no_args_is_help=True, help="Digests: publish, preview, check.")
campaigns_app = typer.Typer(no_args_is_help=True, help="Campaigns: send, watch, pause, resume, cancel.")
suppressions_app = typer.Typer(no_args_is_help=True, help="The suppression list: addresses never mailed.")
bounces_app = typer.Typer(no_args_is_help=True, help="Bounces and complaints that come back by mail.")
users_app = typer.Typer(no_args_is_help=True, help="API users and their tokens.")
app.add_typer(db_app, name="db")
app.add_typer(lists_app, name="lists")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(digests_app, name="digests")
app.add_typer(campaigns_app, name="campaigns")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(bounces_app, name="bounces")
app.add_typer(users_app, name="users")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

T = TypeVar("T")


class Failure(Exception):
    """A one-line reason to stop with a non-zero exit status."""


def fail(message: str) -> NoReturn:
    raise Failure(message)


def settings() -> Settings:
    return get_settings()


@contextmanager
def unit_of_work() -> Iterator[Session]:
    with session_scope(settings()) as session:
        yield session


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


# --- db ---------------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create the schema or bring it up to date."""
    from newsletter.migrate import current_revision, upgrade

    engine = get_engine(settings())
    upgrade(engine, revision)
    out.print(f"database at revision {current_revision(engine)}")


# --- lists ------------------------------------------------------------------------------------------------

THEME_HELP = 'JSON: {"publication_name", "logo_url", "accent_color", "postal_address"}.'


def parse_theme(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        theme = json.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"--theme is not JSON: {exc}")
    if not isinstance(theme, dict):
        fail('--theme must be a JSON object such as {"accent_color": "#1a5fb4"}')
    return theme


@lists_app.command("create")
def lists_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Shown to subscribers.")],
    from_email: Annotated[str, typer.Option(help="Sender address.")],
    from_name: Annotated[str, typer.Option(help="Sender display name (default: the list name).")] = "",
    single_opt_in: Annotated[bool, typer.Option(help="Confirm subscriptions without an email round-trip.")] = False,
    postal_address: Annotated[str, typer.Option(help="Postal address printed in every footer.")] = "",
    private: Annotated[bool, typer.Option("--private", help="Hide from the public archive and forms.")] = False,
    theme: Annotated[str | None, typer.Option(help=THEME_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a mailing list."""
    from newsletter import lists

    with unit_of_work() as session:
        mailing_list = lists.create_list(
            session,
            slug=slug,
            name=name,
            from_email=from_email,
            from_name=from_name,
            opt_in=OptIn.single if single_opt_in else OptIn.double,
            visibility=Visibility.private if private else Visibility.public,
            postal_address=postal_address,
            theme=parse_theme(theme),
        )
        result = {"id": mailing_list.id, "slug": mailing_list.slug}
    emit_json(result) if as_json else out.print(f"created list {slug}")


@lists_app.command("list")
def lists_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Lists with their subscriber counts."""
    from newsletter import lists

    with unit_of_work() as session:
        rows = [
            {"slug": m.slug, "name": m.name, "opt_in": m.opt_in.value, **lists.subscription_counts(session, m.id)}
            for m in session.scalars(select(MailingList).order_by(MailingList.slug))
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("slug", "name", "opt-in", "confirmed", "pending", "unsubscribed")
    for row in rows:
        table.add_row(*(str(row[key]) for key in ("slug", "name", "opt_in", "confirmed", "pending", "unsubscribed")))
    out.print(table)


def list_summary(session: Session, mailing_list: MailingList) -> dict[str, Any]:
    from newsletter import lists

    return {
        "id": mailing_list.id,
        "slug": mailing_list.slug,
        "name": mailing_list.name,
        "description": mailing_list.description,
        "from_email": mailing_list.from_email,
        "from_name": mailing_list.from_name,
        "reply_to": mailing_list.reply_to,
        "opt_in": mailing_list.opt_in.value,
        "visibility": mailing_list.visibility.value,
        "postal_address": mailing_list.postal_address,
        "tracking": mailing_list.tracking,
        "theme": mailing_list.theme,
        "counts": lists.subscription_counts(session, mailing_list.id),
    }


def print_mapping(values: dict[str, Any]) -> None:
    for key, value in values.items():
        out.print(f"{key:>16}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")


@lists_app.command("show")
def lists_show(slug: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One list: its settings and subscription counts."""
    with unit_of_work() as session:
        result = list_summary(session, lists.get_list(session, slug))
    emit_json(result) if as_json else print_mapping(result)


@lists_app.command("update")
def lists_update(
    slug: str,
    name: Annotated[str | None, typer.Option()] = None,
    from_email: Annotated[str | None, typer.Option()] = None,
    from_name: Annotated[str | None, typer.Option()] = None,
    reply_to: Annotated[str | None, typer.Option(help="Empty string clears it.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    postal_address: Annotated[str | None, typer.Option()] = None,
    opt_in: Annotated[OptIn | None, typer.Option()] = None,
    visibility: Annotated[Visibility | None, typer.Option()] = None,
    tracking: Annotated[bool | None, typer.Option("--tracking/--no-tracking")] = None,
    theme: Annotated[str | None, typer.Option(help=THEME_HELP + " Replaces the theme.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Change some fields of a list."""
    from newsletter import lists

    changes: dict[str, Any] = {
        "name": name,
        "from_email": from_email,
        "from_name": from_name,
        "description": description,
        "postal_address": postal_address,
        "opt_in": opt_in,
        "visibility": visibility,
        "tracking": tracking,
        "theme": parse_theme(theme),
    }
    if reply_to is not None:
        changes["reply_to"] = reply_to or None
    with unit_of_work() as session:
        result = list_summary(session, lists.update_list(session, slug, **changes))
    emit_json(result) if as_json else out.print(f"updated list {slug}")


@lists_app.command("delete")
def lists_delete(slug: str) -> None:
    """Delete a list and its subscriptions (refused once campaigns went to it)."""
    from newsletter import lists

    with unit_of_work() as session:
        lists.delete_list(session, slug)
    out.print(f"deleted list {slug}")


# --- subscribers ------------------------------------------------------------------------------------------


@subscribers_app.command("unsubscribe")
def subscribers_unsubscribe(
    email: str, list_slugs: Annotated[list[str] | None, typer.Option("--list", help="Only these lists.")] = None
) -> None:
    """Unsubscribe an address from one list or all of them (recorded as an admin action)."""
    with unit_of_work() as session:
        changed = subscriptions.unsubscribe_address(session, email, list_slugs=list_slugs or [], source="admin")
    out.print(f"unsubscribed from {changed} list(s)")


@subscribers_app.command("import")
def subscribers_import(
    slug: str,
    file: Annotated[Path, typer.Argument(help="CSV with a header row: email, name, any attribute columns.")],
    confirmed: Annotated[bool, typer.Option(help="Consent was obtained elsewhere: no confirmation emails.")] = False,
    strict: Annotated[bool, typer.Option(help="Refuse the whole file if any row is bad.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import subscribers from CSV; bad rows are reported by line while the good ones are imported."""
    from newsletter import imports
    from worker import tasks

    size = file.stat().st_size
    with (
        file.open("rb") as stream,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            console=err,
            disable=as_json or size < 1_000_000,  # a bar for large files only
            transient=True,
        ) as progress,
    ):
        bar = progress.add_task("reading", total=size)
        try:
            with unit_of_work() as session:
                report = imports.import_csv(
                    session,
                    slug,
                    stream,
                    confirmed=confirmed,
                    strict=strict,
                    progress=lambda done: progress.update(bar, completed=done),
                    stage=lambda name: progress.update(bar, description=name),
                )
                list_id = lists.get_list(session, slug).id
        except imports.ImportRefused as exc:
            if as_json:
                emit_json(exc.report.as_dict())
            raise
    queued = bool(report.pending_confirmation)
    if queued:
        tasks.send_import_confirmations.delay(list_id)
    if as_json:
        emit_json(report.as_dict())
        return
    out.print(
        f"imported {report.imported}, updated {report.updated}, skipped {report.skipped}, "
        f"errors {report.error_count} ({report.rows} rows)"
    )
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped_reasons.items() if v)
    if skipped:
        out.print(f"skipped: {skipped}")
    for error in report.errors:
        out.print(f"line {error.line}: {error.reason}", markup=False)
    if report.error_count > len(report.errors):
        out.print(f"... and {report.error_count - len(report.errors)} more errors")
    if report.pending_confirmation:
        state = "queued" if queued else "not sent yet (no confirmation task available)"
        out.print(f"{report.pending_confirmation} subscriptions wait for confirmation; emails {state}")


@subscribers_app.command("export")
def subscribers_export(
    slug: Annotated[str | None, typer.Argument(help="List to export (default: every subscriber).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    email: Annotated[str | None, typer.Option(help="Only addresses containing this.")] = None,
    status: Annotated[SubscriberStatus | None, typer.Option(help="Only subscribers in this state.")] = None,
    attribute: Annotated[str | None, typer.Option(help="Only NAME:VALUE.")] = None,
) -> None:
    """Export subscribers as CSV (spreadsheet-safe); re-importing the file gives the same list."""
    from newsletter import imports

    search = make_search(email=email, status=status, list_slug=slug, attribute=attribute)
    with unit_of_work() as session:
        if slug:
            lists.get_list(session, slug)
        if output is None:
            for line in imports.export_csv(session, search):
                sys.stdout.write(line)
            return
        tmp = output.with_name(output.name + ".part")
        with tmp.open("w", encoding="utf-8", newline="") as target:
            for line in imports.export_csv(session, search):
                target.write(line)
        tmp.replace(output)
    err.print(f"wrote {output}")


def make_search(**filters: Any) -> Any:
    from newsletter.subscribers import Search

    attribute = filters.pop("attribute", None)
    if attribute is not None:
        name, sep, value = attribute.partition(":")
        if not sep or not name:
            fail(f"--attribute {attribute!r}: write NAME:VALUE")
        filters["attribute"] = (name, value)
    return Search(**filters)


def subscriber_summary(session: Session, subscriber: Any) -> dict[str, Any]:
    from newsletter import subscribers

    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "attributes": subscriber.attributes,
        "status": subscriber.status.value,
        "lists": {slug: s.status.value for slug, s in subscribers.subscriptions_of(session, subscriber)},
    }


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    list_slugs: Annotated[list[str] | None, typer.Option("--list", help="Subscribe to this list (repeatable).")] = None,
    name: Annotated[str, typer.Option()] = "",
    confirmed: Annotated[bool, typer.Option(help="Consent was obtained elsewhere.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add a subscriber, optionally to lists."""
    from newsletter import subscribers
    from newsletter.models import SubscriptionSource

    with unit_of_work() as session:
        subscriber = subscribers.add_subscriber(
            session, email, name=name, list_slugs=list_slugs or [], confirmed=confirmed, source=SubscriptionSource.admin
        )
        result = subscriber_summary(session, subscriber)
    emit_json(result) if as_json else out.print(f"subscriber {result['id']} {result['email']}")


@subscribers_app.command("search")
def subscribers_search(
    email: Annotated[str | None, typer.Option(help="Substring of the address.")] = None,
    list_slug: Annotated[str | None, typer.Option("--list")] = None,
    status: Annotated[SubscriberStatus | None, typer.Option()] = None,
    attribute: Annotated[str | None, typer.Option(help="NAME:VALUE")] = None,
    after: Annotated[int | None, typer.Option(help="Cursor printed by the previous page.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find subscribers, a page at a time."""
    from newsletter import subscribers

    search = make_search(email=email, list_slug=list_slug, status=status, attribute=attribute)
    with unit_of_work() as session:
        page = subscribers.search_page(session, search, after=after, limit=limit)
        rows = [subscriber_summary(session, s) for s in page.items]
    if as_json:
        emit_json({"items": rows, "next_cursor": page.next_cursor})
        return
    table = Table("id", "email", "name", "status", "lists")
    for row in rows:
        lists_text = ", ".join(f"{k}:{v}" for k, v in row["lists"].items())
        table.add_row(str(row["id"]), row["email"], row["name"], row["status"], lists_text)
    out.print(table)
    if page.next_cursor is not None:
        out.print(f"next page: --after {page.next_cursor}")


def subscriber_action(email: str, action: Callable[[Session, Any], T]) -> T:
    from newsletter import subscribers

    with unit_of_work() as session:
        return action(session, subscribers.get_subscriber(session, email))


@subscribers_app.command("block")
def subscribers_block(email: str) -> None:
    """Blocklist a subscriber: never mailed, subscriptions kept."""
    from newsletter import subscribers

    subscriber_action(email, lambda s, sub: subscribers.set_blocked(s, sub, True))
    out.print(f"blocked {email}")


@subscribers_app.command("unblock")
def subscribers_unblock(email: str) -> None:
    """Take a subscriber off the blocklist."""
    from newsletter import subscribers

    subscriber_action(email, lambda s, sub: subscribers.set_blocked(s, sub, False))
    out.print(f"unblocked {email}")


@subscribers_app.command("delete")
def subscribers_delete(email: str) -> None:
    """Delete a subscriber with their ledger rows (use `erase` to keep statistics)."""
    from newsletter import subscribers

    subscriber_action(email, subscribers.delete_subscriber)
    out.print(f"deleted {email}")


@subscribers_app.command("gdpr-export")
def subscribers_gdpr_export(email: str, output: Annotated[Path | None, typer.Option("-o", "--output")] = None) -> None:
    """Everything stored about one subscriber, as JSON."""
    from newsletter import gdpr

    data = subscriber_action(email, gdpr.export_subscriber)
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


@subscribers_app.command("erase")
def subscribers_erase(
    email: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False
) -> None:
    """GDPR erase: remove personal data for good; the address stays suppressed (as a hash)."""
    from newsletter import gdpr

    if not yes and not typer.confirm(f"erase {email} for good?"):
        fail("not erased")
    subscriber_action(email, gdpr.erase_subscriber)
    out.print(f"erased {email}")


# --- digests ----------------------------------------------------------------------------------------------


@digests_app.command("publish")
def digests_publish(file: Path, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Validate and store a digest (.md with front matter, .yaml or .json); prints its slug."""
    from newsletter import digests

    digest = digests.load_digest(file)
    with unit_of_work() as session:
        stored, created = digests.publish(session, digest)
        slug = stored.slug
    if as_json:
        emit_json({"slug": slug, "created": created})
    else:
        sys.stdout.write(slug + "\n")


def _write_output(content: str | bytes, output: Path | None) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        err.print(f"wrote {output} ({len(data) / 1024:.1f} KB)")


@digests_app.command("preview")
def digests_preview(
    slug: Annotated[str, typer.Argument(help="Slug of a published digest.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    text: Annotated[bool, typer.Option("--text", help="The text part instead of the HTML.")] = False,
    eml: Annotated[bool, typer.Option("--eml", help="The complete message (.eml) instead of the HTML.")] = False,
    list_slug: Annotated[str | None, typer.Option("--list", help="Render for this list (default: the oldest).")] = None,
    template: Annotated[str | None, typer.Option(help="An uploaded template instead of the bundled one.")] = None,
) -> None:
    """The email exactly as a subscriber of the list gets it, for a sample recipient."""
    from newsletter import previews, templates

    if text and eml:
        fail("choose one of --text and --eml")
    with unit_of_work() as session:
        try:
            preview = previews.preview_digest(session, settings(), slug, list_slug, template=template)
        except (previews.NoListToPreview, templates.TemplateNotFound) as exc:
            fail(describe(exc))
    _write_output(preview.message if eml else preview.text if text else preview.html, output)


@digests_app.command("check")
def digests_check(
    slug: Annotated[str, typer.Argument(help="Slug of a published digest.")],
    list_slug: Annotated[str | None, typer.Option("--list", help="Check for this list (default: the oldest).")] = None,
    template: Annotated[str | None, typer.Option(help="An uploaded template instead of the bundled one.")] = None,
    spamassassin: Annotated[bool, typer.Option(help="Score with a local SpamAssassin when installed.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pre-send deliverability check; exits non-zero when something must be fixed before sending."""
    from newsletter import deliverability, previews, templates

    with unit_of_work() as session:
        try:
            findings = deliverability.check(
                session, settings(), slug, list_slug, template=template, spamassassin=spamassassin
            )
        except (previews.NoListToPreview, templates.TemplateNotFound) as exc:
            fail(describe(exc))
    problems = deliverability.errors(findings)
    if as_json:
        emit_json({"ok": not problems, "findings": [finding.as_dict() for finding in findings]})
    else:
        styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
        for finding in findings:
            where = f"item {finding.item} ({finding.headline}): " if finding.item else ""
            out.print(f"[{styles[finding.level]}]{finding.level:>7}[/] {where}{finding.message}", markup=True)
    if problems:
        fail(f"{len(problems)} problem(s) must be fixed before digest {slug!r} can be sent")


# --- templates --------------------------------------------------------------------------------------------

templates_app = typer.Typer(no_args_is_help=True, help="Custom digest templates (MJML, rendered in a sandbox).")
app.add_typer(templates_app, name="templates")


@templates_app.command("add")
def templates_add(
    name: Annotated[str, typer.Argument(help="Lowercase name, e.g. 'weekly-dark'.")],
    file: Annotated[Path, typer.Argument(help="MJML body template; start from templates/email/digest/body.mjml.")],
) -> None:
    """Upload a digest template (replacing one of the same name) after a test render of the sample digest."""
    from newsletter import templates

    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot read the template: {exc}")
    with unit_of_work() as session:
        try:
            template = templates.save_template(session, name, source)
        except templates.InvalidTemplate as exc:
            fail(f"{file}: {exc}")
        result = template.name
    out.print(f"saved template {result}")


@templates_app.command("list")
def templates_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Uploaded templates."""
    from newsletter import templates

    with unit_of_work() as session:
        rows: list[dict[str, str]] = [
            {"name": t.name, "characters": str(len(t.source)), "updated_at": t.updated_at.isoformat()}
            for t in templates.list_templates(session)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("name", "characters", "updated")
    for row in rows:
        table.add_row(row["name"], row["characters"], row["updated_at"])
    out.print(table)


# --- campaigns --------------------------------------------------------------------------------------------


def parse_when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"--at {value!r} is not an ISO 8601 time such as 2026-12-01T09:00:00+00:00")
    if when.tzinfo is None:
        fail(f"--at {value!r} has no timezone: add one, e.g. {value}+00:00")
    return when


@campaigns_app.command("send")
def campaigns_send(
    digest: Annotated[str, typer.Argument(help="Slug of a published digest.")],
    list_slugs: Annotated[list[str], typer.Option("--list", help="List to send to (repeatable).")],
    at: Annotated[str | None, typer.Option("--at", help="ISO 8601 time with timezone.")] = None,
    subject: Annotated[str | None, typer.Option(help="Default: the digest's title.")] = None,
    again: Annotated[bool, typer.Option("--again", help="Send even if a list already got this digest.")] = False,
    template: Annotated[str | None, typer.Option(help="An uploaded template instead of the bundled one.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the campaign finishes.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send a digest to one or more lists, now or at a given time."""
    from newsletter import delivery
    from worker import tasks

    when = parse_when(at)
    with unit_of_work() as session:
        campaign = delivery.create_campaign(
            session,
            digest_slug=digest,
            list_slugs=list_slugs,
            subject=subject,
            scheduled_at=when,
            allow_repeat=again,
            template=template,
        )
        campaign_id = campaign.id
    if when is None:
        tasks.start_campaign.delay(campaign_id)
    if wait:
        watch(campaign_id, quiet=as_json)
    with unit_of_work() as session:
        status = delivery.get_campaign(session, campaign_id).status.value
    emit_json({"id": campaign_id, "status": status}) if as_json else out.print(str(campaign_id))


@campaigns_app.command("test")
def campaigns_test(
    digest: Annotated[str, typer.Argument(help="Slug of a published digest.")],
    to: Annotated[str, typer.Option("--to", help="Address to send the test to.")],
    list_slug: Annotated[str | None, typer.Option("--list", help="Render for this list (default: the oldest).")] = None,
    template: Annotated[str | None, typer.Option(help="An uploaded template instead of the bundled one.")] = None,
) -> None:
    """Send one real message marked as a test ([TEST] subject, untracked links, recorded nowhere)."""
    from newsletter import previews, templates
    from newsletter.mailer import get_mailer

    config = settings()
    with unit_of_work() as session:
        try:
            preview, result = previews.send_test(
                session,
                config,
                get_mailer(config.smtp_url, config.outbox_dir),
                digest,
                to,
                list_slug,
                template=template,
            )
        except addresses.InvalidEmail as exc:
            fail(f"--to {to!r}: {exc}")
        except (previews.NoListToPreview, previews.TestSendFailed, templates.TemplateNotFound) as exc:
            fail(describe(exc))
    out.print(
        f"sent test of {digest} for list {preview.list_slug} to {preview.recipient} via "
        f"{previews.destination(config)}: {result.code} {result.text}"
    )


def watch(campaign_id: int, *, quiet: bool = False, poll: float = 1.0) -> None:
    """Progress, rate and ETA until the campaign stops moving; in embedded mode this loop also runs the due retries."""
    from newsletter.delivery import progress as delivery_progress
    from worker import tasks

    embedded = settings().broker_url is None
    with Progress(
        TextColumn("campaign {task.fields[cid]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        console=err,
        disable=quiet,
    ) as bar_view:
        bar = bar_view.add_task("send", total=None, cid=campaign_id, status="", rate="", eta="")
        while True:
            asked = time.monotonic()
            with unit_of_work() as session:
                state = delivery_progress.campaign_progress(session, campaign_id)
            # progress() scans the campaign's ledger: on a big one, ask less often than once a second
            # so that watching costs the database at most a tenth of one connection's time
            wait = max(poll, 10 * (time.monotonic() - asked))
            eta = "" if state.eta_seconds is None else f"ETA {dt.timedelta(seconds=round(state.eta_seconds))}"
            bar_view.update(
                bar,
                total=state.total or None,
                completed=state.done,
                status=state.status.value,
                rate=f"{state.rate:,.0f}/s" if state.rate else "",
                eta=eta if state.status == CampaignStatus.sending else "",
            )
            if state.last_error and not state.rate and not quiet:
                bar_view.update(bar, eta=f"waiting to retry: {state.last_error[:120]}")
            if state.status not in (CampaignStatus.sending, CampaignStatus.scheduled, CampaignStatus.draft):
                if state.pause_reason and not quiet:
                    err.print(f"campaign {campaign_id} paused: {state.pause_reason}", markup=False)
                return
            if embedded:
                tasks.sweep.delay()
            time.sleep(wait)


@campaigns_app.command("status")
def campaigns_status(campaign_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts per delivery status, opens, clicks per link, unsubscribes, bounces, rate and duration."""
    from newsletter import stats

    with unit_of_work() as session:
        result = stats.campaign_report(session, campaign_id)
    if as_json:
        emit_json(result)
        return
    out.print(f"campaign {result['id']} [{result['status']}] {result['subject']}", markup=False)
    for name, count in result["counts"].items():
        out.print(f"  {name:>8}: {count}")
    out.print(f"  opens: {result['opens']} ({result['unique_opens']} unique), clicks: {result['clicks']}")
    out.print(f"  unsubscribes: {result['unsubscribes']}, bounces: {result['bounces']}")
    if result["duration_seconds"] is not None:
        rate = result["send_rate_per_second"]
        out.print(f"  duration: {result['duration_seconds']:.1f} s" + (f", {rate} messages/s" if rate else ""))
    for link in result["links"]:
        out.print(f"  {link['clicks']:>6} clicks ({link['unique_clicks']} unique)  {link['url']}", markup=False)


def parse_statuses(value: str) -> list[DeliveryStatus]:
    statuses = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            statuses.append(DeliveryStatus(part))
        except ValueError:
            fail(f"unknown delivery status {part!r}: use {', '.join(s.value for s in DeliveryStatus)}")
    return statuses


@campaigns_app.command("list")
def campaigns_list(
    status: Annotated[CampaignStatus | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Campaigns, newest first."""
    from newsletter import stats

    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {"id": c.id, "status": c.status.value, "subject": c.subject, "digest": c.digest.slug,
             "recipients": c.recipient_count, "started_at": c.started_at}
            for c in stats.list_campaigns(session, status=status, limit=limit)
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "status", "recipients", "digest", "subject")
    for row in rows:
        table.add_row(str(row["id"]), row["status"], str(row["recipients"]), row["digest"], row["subject"])
    out.print(table)


@campaigns_app.command("deliveries")
def campaigns_deliveries(
    campaign_id: int,
    status: Annotated[str, typer.Option(help="Comma-separated, e.g. failed,unknown.")] = "",
    after: Annotated[int | None, typer.Option(help="Cursor printed by the previous page.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The per-recipient ledger, e.g. who failed and why."""
    from newsletter import stats

    with unit_of_work() as session:
        page = stats.ledger_page(session, campaign_id, statuses=parse_statuses(status), after=after, limit=limit)
    if as_json:
        emit_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    table = Table("id", "email", "status", "attempts", "smtp")
    for row in page.items:
        smtp = f"{row['smtp_code'] or ''} {row['smtp_text'] or ''}".strip()
        table.add_row(str(row["id"]), row["email"], row["status"], str(row["attempts"]), smtp)
    out.print(table)
    if page.next_cursor is not None:
        out.print(f"next page: --after {page.next_cursor}")


@campaigns_app.command("resend")
def campaigns_resend(
    campaign_id: int,
    status: Annotated[str, typer.Option(help="Which recipients: failed, unknown or failed,unknown.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send again to failed and/or unknown recipients only; sent ones never get a second copy."""
    from newsletter import delivery, stats
    from worker import tasks

    with unit_of_work() as session:
        moved, ranges = stats.resend(session, settings(), campaign_id, parse_statuses(status))
        state = delivery.get_campaign(session, campaign_id).status.value
    tasks.enqueue_batches(ranges)
    if as_json:
        emit_json({"id": campaign_id, "status": state, "requeued": moved})
    else:
        out.print(f"campaign {campaign_id}: {moved} recipient(s) queued again")


@campaigns_app.command("pause")
def campaigns_pause(campaign_id: int) -> None:
    """Stop claiming new recipients; rows stay pending."""
    from newsletter import delivery

    with unit_of_work() as session:
        delivery.pause(session, campaign_id)
    out.print(f"campaign {campaign_id} paused")


@campaigns_app.command("resume")
def campaigns_resume(campaign_id: int) -> None:
    """Carry on where a pause stopped; never resends a delivered message."""
    from newsletter import delivery
    from worker import tasks

    with unit_of_work() as session:
        ranges = delivery.resume(session, settings(), campaign_id)
    tasks.enqueue_batches(ranges)
    out.print(f"campaign {campaign_id} resumed")


@campaigns_app.command("cancel")
def campaigns_cancel(campaign_id: int) -> None:
    """Stop for good; recipients not yet sent to are marked skipped."""
    from newsletter import delivery

    with unit_of_work() as session:
        delivery.cancel(session, campaign_id)
    out.print(f"campaign {campaign_id} cancelled")


# --- suppressions -----------------------------------------------------------------------------------------


@suppressions_app.command("list")
def suppressions_list(
    reason: Annotated[SuppressionReason | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option(help="Substring, or an exact erased address.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every suppressed address (erased ones show only their hash)."""
    from newsletter import suppressions

    with unit_of_work() as session:
        rows: list[dict[str, Any]] = []
        after = None
        while True:  # stream page by page: the list can be long
            page = suppressions.list_suppressions(session, reason=reason, email=email, after=after, limit=1000)
            rows.extend(
                {"email": s.email, "email_hash": s.email_hash, "reason": s.reason.value, "detail": s.detail,
                 "created_at": s.created_at}
                for s in page.items
            )  # fmt: skip
            if page.next_cursor is None:
                break
            after = page.next_cursor
    if as_json:
        emit_json(rows)
        return
    table = Table("address", "reason", "since", "detail")
    for row in rows:
        address = row["email"] or f"(erased) {row['email_hash'][:12]}"
        table.add_row(address, row["reason"], f"{row['created_at']:%Y-%m-%d}", row["detail"] or "")
    out.print(table)


@suppressions_app.command("add")
def suppressions_add(
    email: Annotated[str | None, typer.Argument(help="One address (or use --file).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="CSV: an email column, or addresses one per line.")
    ] = None,
    detail: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Never mail an address again (or every address of a CSV file)."""
    from newsletter import suppressions

    if (email is None) == (file is None):
        fail("give one address or --file FILE.csv")
    with unit_of_work() as session:
        if email is not None:
            _, created = suppressions.add(session, email, detail=detail)
            result: dict[str, Any] = {"added": int(created), "already": int(not created), "errors": []}
        else:
            assert file is not None
            with file.open(encoding="utf-8-sig", newline="") as stream:
                bulk = suppressions.add_csv(session, stream, detail=detail)
            result = {
                "added": bulk.added,
                "already": bulk.already,
                "errors": [{"line": line, "reason": reason} for line, reason in bulk.errors or []],
            }
    if as_json:
        emit_json(result)
        return
    out.print(f"suppressed {result['added']} new address(es), {result['already']} already there")
    for error in result["errors"]:
        out.print(f"line {error['line']}: {error['reason']}", markup=False)


@suppressions_app.command("remove")
def suppressions_remove(email: str) -> None:
    """Allow mail to an address again (logged with who did it)."""
    import getpass

    from newsletter import suppressions

    with unit_of_work() as session:
        suppressions.remove(session, email, by=f"cli:{getpass.getuser()}")
    out.print(f"{email} removed from the suppression list")


# --- bounces ----------------------------------------------------------------------------------------------


def _report_sources(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each message: files as given, every file of a directory (a Maildir's new/, say),
    standard input for `-` or when no path is given (an MTA's pipe transport)."""
    if not paths:
        paths = [Path("-")]
    for path in paths:
        if str(path) == "-":
            yield "stdin", sys.stdin.buffer.read()
        elif path.is_dir():
            for member in sorted(p for p in path.iterdir() if p.is_file()):
                yield str(member), member.read_bytes()
        else:
            yield str(path), path.read_bytes()


@bounces_app.command("ingest")
def bounces_ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Messages (.eml) or directories of them; none or - reads stdin.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record delivery status notifications (RFC 3464) and feedback reports (RFC 5965) on the ledger.

    A hard bounce or a complaint suppresses the address, a soft bounce is recorded only. Each message is
    its own unit of work; the exit status is 1 if any input was not such a report.
    """
    from newsletter import bounces

    results: list[dict[str, Any]] = []
    refused = 0
    for name, data in _report_sources(paths or []):
        try:
            with unit_of_work() as session:
                outcomes = bounces.ingest(session, settings(), data)
        except bounces.NotAReport as error:
            refused += 1
            results.append({"source": name, "error": str(error), "reports": []})
            if not as_json:
                err.print(f"{name}: {error}", markup=False, soft_wrap=True)
            continue
        results.append({"source": name, "error": None, "reports": [o.as_dict() for o in outcomes]})
        if not as_json:
            if not outcomes:
                out.print(f"{name}: a report with nothing to record (every recipient delivered)", markup=False)
            for o in outcomes:
                about = f" (campaign {o.campaign_id}, delivery {o.delivery_id})" if o.delivery_id else ""
                what = " ".join(p for p in (o.report.kind, o.report.status, o.report.recipient) if p)
                out.print(f"{name}: {what}{about}: {o.result}: {o.reason}", markup=False)
    if as_json:
        emit_json(results)
    if refused:
        raise typer.Exit(1)


# --- users ------------------------------------------------------------------------------------------------


def print_token(issued: Any, as_json: bool) -> None:
    if as_json:
        emit_json({"name": issued.user.name, "role": issued.user.role.value, "token": issued.token,
                   "prefix": issued.prefix})  # fmt: skip
        return
    sys.stdout.write(issued.token + "\n")
    err.print(f"API token for {issued.user.name} ({issued.user.role.value}); it is shown only this once.")


@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[Role, typer.Option(help="admin: everything; editor: digests, campaigns, stats.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API user; prints their token once (only its hash is stored)."""
    from newsletter import users

    with unit_of_work() as session:
        issued = users.create_user(session, name, role)
    print_token(issued, as_json)


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Users with their active tokens, by prefix."""
    from newsletter import users

    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {
                "name": u.name,
                "role": u.role.value,
                "created_at": u.created_at,
                "tokens": [
                    {"prefix": t.prefix, "created_at": t.created_at, "last_used_at": t.last_used_at}
                    for t in users.active_tokens(session, u)
                ],
            }
            for u in users.list_users(session)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("name", "role", "token prefix", "last used")
    for row in rows:
        for token in row["tokens"] or [None]:
            last = token and token["last_used_at"]
            table.add_row(row["name"], row["role"], token["prefix"] if token else "(none)",
                          f"{last:%Y-%m-%d %H:%M}" if last else "never")  # fmt: skip
    out.print(table)


@users_app.command("revoke")
def users_revoke(
    prefix: Annotated[str | None, typer.Argument(help="Token prefix as `users list` shows it.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Revoke every token of this user.")] = None,
) -> None:
    """Revoke one token by its prefix, or all tokens of a user."""
    from newsletter import users

    if (prefix is None) == (user is None):
        fail("give a token prefix or --user NAME")
    with unit_of_work() as session:
        count = users.revoke(session, prefix=prefix, name=user)
    out.print(f"revoked {count} token(s)")


@users_app.command("rotate")
def users_rotate(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Issue a new token for a user and revoke their old ones."""
    from newsletter import users

    with unit_of_work() as session:
        issued = users.rotate(session, name)
    print_token(issued, as_json)


# --- demo and serve ---------------------------------------------------------------------------------------


@app.command("demo")
def demo(
    subscribers: Annotated[int, typer.Option(help="How many demo subscribers.")] = 36,
) -> None:
    """Embedded quick start: a SQLite database, a demo list, the sample digest, sent to the outbox."""
    from newsletter import demo as demo_module

    demo_module.run(settings(), subscribers=subscribers, console=out)


@app.command("serve")
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes; one per CPU core serves the most requests.")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (off by default: the reverse proxy in front usually does).")
    ] = False,
) -> None:
    """Run the web app (public pages, tracking, admin API)."""
    import uvicorn

    settings()  # fail early on bad configuration
    uvicorn.run(
        "newsletter.web:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


# --- errors -----------------------------------------------------------------------------------------------


def expected_errors() -> tuple[type[Exception], ...]:
    """Errors that mean "this cannot be done" rather than a bug: one line, exit 1."""
    return (Failure, ConfigError, FileNotFoundError, OperationalError, errors.NewsletterError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OperationalError):
        url = get_settings().database_url
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"cannot use the database {_hide_password(url)}: {reason}"
    if isinstance(exc, LookupError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def run_guarded(entry: Callable[[], T]) -> T:
    try:
        return entry()
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        err.print(f"error: {describe(exc)}", markup=False, soft_wrap=True)
        raise SystemExit(1) from None


def _click_errors() -> tuple[
    tuple[type[BaseException], ...], tuple[type[Exception], ...], tuple[type[BaseException], ...]
]:
    """(exit, usage error, abort) classes of click and of the click copy newer Typer versions vendor."""
    import click

    exits: list[type[BaseException]] = [click.exceptions.Exit, typer.Exit]
    usage: list[type[Exception]] = [click.ClickException]
    aborts: list[type[BaseException]] = [click.exceptions.Abort, typer.Abort]
    try:
        from typer._click import exceptions as vendored  # typer >= 0.25 ships its own click

        usage.append(vendored.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(usage), tuple(aborts)


def main() -> None:
    exits, usage, aborts = _click_errors()
    try:
        result = run_guarded(lambda: app(standalone_mode=False))
    except exits as exc:
        raise SystemExit(getattr(exc, "exit_code", 0)) from None
    except usage as exc:
        # One line like every other failure; `--help` shows the usage.
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(f"error: {' '.join(message.split())}", markup=False, soft_wrap=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except aborts:
        err.print("error: aborted")
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)
