"""`newsletter subscribers`: import, export, find, block, unsubscribe, delete and erase subscribers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.orm import Session

from newsletter import audit, exports, gdpr, imports, lists, subscribers, subscriptions
from newsletter.cli.console import (
    AsJson,
    emit_json,
    err,
    fail,
    id_option,
    note,
    print_table,
    readable_json,
    say,
    say_next_page,
    settings,
    unit_of_work,
)
from newsletter.models import Subscriber, SubscriberStatus, SubscriptionSource
from newsletter.subscribers import Search

app = typer.Typer(no_args_is_help=True, help="Subscribers: import, export, unsubscribe.")

T = TypeVar("T")


@app.command("unsubscribe")
def subscribers_unsubscribe(
    email: str, list_slugs: Annotated[list[str] | None, typer.Option("--list", help="Only these lists.")] = None
) -> None:
    """Unsubscribe an address from one list or all of them (recorded as an admin action)."""
    with unit_of_work() as session:
        changed = subscriptions.unsubscribe_address(session, email, list_slugs=list_slugs or [], source="admin")
        target = f"address:{email.strip().lower()}"
        audit.record(
            session, audit.Actor.cli(), "subscriber.unsubscribe", target, lists=list_slugs or [], changed=changed
        )
    say(f"unsubscribed from {changed} list(s)")


@app.command("import")
def subscribers_import(
    slug: str,
    file: Annotated[Path, typer.Argument(help="CSV with a header row: email, name, any attribute columns.")],
    confirmed: Annotated[bool, typer.Option(help="Consent was obtained elsewhere: no confirmation emails.")] = False,
    strict: Annotated[bool, typer.Option(help="Refuse the whole file if any row is bad.")] = False,
    as_json: AsJson = False,
) -> None:
    """Import subscribers from CSV; bad rows are reported by line while the good ones are imported."""
    # Deferred: worker.app reads the settings when imported, and a bad configuration must reach main()'s
    # one-line error, not stop `import newsletter.cli` with a traceback (and `--help` must work without one).
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
                audit.record(session, audit.Actor.cli(), "import.run", f"list:{slug}", file=file.name,
                             imported=report.imported, updated=report.updated, errors=report.error_count)  # fmt: skip
        except imports.ImportRefused as exc:
            if as_json:
                emit_json(exc.report.as_dict())
            raise
    if report.pending_confirmation:
        tasks.send_import_confirmations.delay(list_id)
    if as_json:
        emit_json(report.as_dict())
    else:
        print_import_report(report)


def print_import_report(report: imports.ImportReport) -> None:
    say(
        f"imported {report.imported}, updated {report.updated}, skipped {report.skipped}, "
        f"errors {report.error_count} ({report.rows} rows)"
    )
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped_reasons.items() if v)
    if skipped:
        say(f"skipped: {skipped}")
    for error in report.errors:
        say(f"line {error.line}: {error.reason}")
    if report.error_count > len(report.errors):
        say(f"... and {report.error_count - len(report.errors)} more errors")
    if report.pending_confirmation:
        say(f"{report.pending_confirmation} subscriptions wait for confirmation; emails queued")


@app.command("export")
def subscribers_export(
    slug: Annotated[str | None, typer.Argument(help="List to export (default: every subscriber).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    email: Annotated[str | None, typer.Option(help="Only addresses containing this.")] = None,
    status: Annotated[
        str,
        typer.Option(
            help="A list's subscriptions in this state: confirmed (the people it mails), pending, unsubscribed "
            "or all. The file has a status column either way.",
        ),
    ] = "confirmed",
    subscriber_status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only subscribers in this state (active, blocklisted).")
    ] = None,
    attribute: Annotated[str | None, typer.Option(help="Only NAME:VALUE.")] = None,
) -> None:
    """Export subscribers as CSV (spreadsheet-safe); re-importing the file gives the same list."""
    if status not in exports.EXPORT_STATUSES:
        fail(f"--status {status!r}: must be one of {', '.join(exports.EXPORT_STATUSES)}")
    export_status: exports.ExportStatus = status
    search = make_search(email=email, status=subscriber_status, list_slug=slug, attribute=attribute)
    with unit_of_work() as session:
        if slug:
            lists.get_list(session, slug)
        audit.record(session, audit.Actor.cli(), "export.run", f"list:{slug}" if slug else "subscribers", status=status)
        session.commit()  # the record stays even if the reader of stdout goes away mid-file
        if output is None:
            for line in exports.export_csv(session, search, status=export_status):
                sys.stdout.write(line)
            return
        tmp = output.with_name(output.name + ".part")
        with tmp.open("w", encoding="utf-8", newline="") as target:
            for line in exports.export_csv(session, search, status=export_status):
                target.write(line)
        tmp.replace(output)
    note(f"wrote {output}")


def make_search(**filters: Any) -> Search:
    attribute = filters.pop("attribute", None)
    if attribute is not None:
        name, sep, value = attribute.partition(":")
        if not sep or not name:
            fail(f"--attribute {attribute!r}: write NAME:VALUE")
        filters["attribute"] = (name, value)
    return Search(**filters)


def subscriber_summary(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "attributes": subscriber.attributes,
        "status": subscriber.status.value,
        "lists": {slug: s.status.value for slug, s in subscribers.subscriptions_of(session, subscriber)},
    }


@app.command("add")
def subscribers_add(
    email: str,
    list_slugs: Annotated[list[str] | None, typer.Option("--list", help="Subscribe to this list (repeatable).")] = None,
    name: Annotated[str, typer.Option()] = "",
    confirmed: Annotated[bool, typer.Option(help="Consent was obtained elsewhere.")] = False,
    as_json: AsJson = False,
) -> None:
    """Add a subscriber, optionally to lists. Without --confirmed a double opt-in list's subscription
    stays pending and its confirmation email goes out, as from the subscribe form (rate-limited)."""
    with unit_of_work() as session:
        added = subscribers.add(
            session,
            email,
            name=name,
            list_slugs=list_slugs or [],
            confirmed=confirmed,
            source=SubscriptionSource.admin,
            resend_hours=settings().confirm_resend_hours,
        )
        result = subscriber_summary(session, added.subscriber)
    from worker import tasks  # deferred as in import: loading Celery costs every other command

    # after the commit: the task must find the subscription
    for subscription_id in added.confirmations:
        tasks.send_confirmation.delay(subscription_id)
    if as_json:
        emit_json({**result, "confirmations_sent": len(added.confirmations)})
        return
    say(f"subscriber {result['id']} {result['email']}")
    if added.confirmations:
        say(f"{len(added.confirmations)} confirmation email(s) queued; the subscription stays pending until confirmed")


@app.command("search")
def subscribers_search(
    email: Annotated[str | None, typer.Option(help="Substring of the address.")] = None,
    list_slug: Annotated[str | None, typer.Option("--list")] = None,
    status: Annotated[SubscriberStatus | None, typer.Option()] = None,
    attribute: Annotated[str | None, typer.Option(help="NAME:VALUE")] = None,
    after: Annotated[int | None, id_option("Cursor printed by the previous page.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: AsJson = False,
) -> None:
    """Find subscribers, a page at a time."""
    search = make_search(email=email, list_slug=list_slug, status=status, attribute=attribute)
    with unit_of_work() as session:
        page = subscribers.search_page(session, search, after=after, limit=limit)
        rows = [subscriber_summary(session, s) for s in page.items]
    if as_json:
        emit_json({"items": rows, "next_cursor": page.next_cursor})
        return
    print_table(
        ("id", "email", "name", "status", "lists"),
        (
            (
                row["id"],
                row["email"],
                row["name"],
                row["status"],
                ", ".join(f"{k}:{v}" for k, v in row["lists"].items()),
            )
            for row in rows
        ),
    )
    say_next_page(page.next_cursor)


def subscriber_action(email: str, action: Callable[[Session, Subscriber], T], audited: str | None = None) -> T:
    """Run `action` on the subscriber with this address, recorded in the audit log as `audited`."""
    with unit_of_work() as session:
        subscriber = subscribers.get_subscriber(session, email)
        if audited:
            audit.record(session, audit.Actor.cli(), audited, f"subscriber:{subscriber.id}")
        return action(session, subscriber)


@app.command("block")
def subscribers_block(email: str) -> None:
    """Blocklist a subscriber: never mailed, subscriptions kept."""
    subscriber_action(email, lambda s, sub: subscribers.set_blocked(s, sub, True), "subscriber.block")
    say(f"blocked {email}")


@app.command("unblock")
def subscribers_unblock(email: str) -> None:
    """Take a subscriber off the blocklist."""
    subscriber_action(email, lambda s, sub: subscribers.set_blocked(s, sub, False), "subscriber.unblock")
    say(f"unblocked {email}")


@app.command("delete")
def subscribers_delete(email: str) -> None:
    """Delete a subscriber with their ledger rows (use `erase` to keep statistics)."""
    subscriber_action(email, subscribers.delete_subscriber, "subscriber.delete")
    say(f"deleted {email}")


@app.command("gdpr-export")
def subscribers_gdpr_export(email: str, output: Annotated[Path | None, typer.Option("-o", "--output")] = None) -> None:
    """Everything stored about one subscriber, as JSON."""
    data = subscriber_action(email, gdpr.export_subscriber)
    text = readable_json(data)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        note(f"wrote {output}")


@app.command("erase")
def subscribers_erase(
    email: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False
) -> None:
    """GDPR erase: remove personal data for good; the address stays suppressed (as a hash)."""
    if not yes and not typer.confirm(f"erase {email} for good?"):
        fail("not erased")
    subscriber_action(email, gdpr.erase_subscriber, "subscriber.erase")
    say(f"erased {email}")
