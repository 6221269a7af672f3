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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from newsletter import delivery, digests, subscriptions
from newsletter.config import ConfigError, Settings, get_settings
from newsletter.db import get_engine, session_scope
from newsletter.models import (
    CampaignStatus,
    MailingList,
    OptIn,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
lists_app = typer.Typer(no_args_is_help=True, help="Mailing lists.")
subscribers_app = typer.Typer(no_args_is_help=True, help="Subscribers: import, export, unsubscribe.")
digests_app = typer.Typer(no_args_is_help=True, help="Digests: publish, preview, check.")
campaigns_app = typer.Typer(no_args_is_help=True, help="Campaigns: send, watch, pause, resume, cancel.")
app.add_typer(db_app, name="db")
app.add_typer(lists_app, name="lists")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(digests_app, name="digests")
app.add_typer(campaigns_app, name="campaigns")

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


@lists_app.command("create")
def lists_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Shown to subscribers.")],
    from_email: Annotated[str, typer.Option(help="Sender address.")],
    from_name: Annotated[str, typer.Option(help="Sender display name (default: the list name).")] = "",
    single_opt_in: Annotated[bool, typer.Option(help="Confirm subscriptions without an email round-trip.")] = False,
    postal_address: Annotated[str, typer.Option(help="Postal address printed in every footer.")] = "",
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
            postal_address=postal_address,
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


# --- subscribers ------------------------------------------------------------------------------------------


@subscribers_app.command("unsubscribe")
def subscribers_unsubscribe(
    email: str, list_slugs: Annotated[list[str] | None, typer.Option("--list", help="Only these lists.")] = None
) -> None:
    """Unsubscribe an address from one list or all of them (recorded as an admin action)."""
    with unit_of_work() as session:
        changed = subscriptions.unsubscribe_address(session, email, list_slugs=list_slugs or [], source="admin")
    out.print(f"unsubscribed from {changed} list(s)")


# --- digests ----------------------------------------------------------------------------------------------


@digests_app.command("publish")
def digests_publish(file: Path, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Validate and store a digest (.md with front matter, .yaml or .json); prints its slug."""
    digest = digests.load_digest(file)
    with unit_of_work() as session:
        stored, created = digests.publish(session, digest)
        slug = stored.slug
    if as_json:
        emit_json({"slug": slug, "created": created})
    else:
        sys.stdout.write(slug + "\n")


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
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the campaign finishes.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send a digest to one or more lists, now or at a given time."""
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
        )
        campaign_id = campaign.id
    if when is None:
        tasks.start_campaign.delay(campaign_id)
    if wait:
        watch(campaign_id, quiet=as_json)
    with unit_of_work() as session:
        status = delivery.get_campaign(session, campaign_id).status.value
    emit_json({"id": campaign_id, "status": status}) if as_json else out.print(str(campaign_id))


def watch(campaign_id: int, *, quiet: bool = False, poll: float = 1.0) -> None:
    """Progress, rate and ETA until the campaign stops moving; in embedded mode this loop also runs the due retries."""
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
            with unit_of_work() as session:
                state = delivery.progress(session, campaign_id)
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
            time.sleep(poll)


@campaigns_app.command("status")
def campaigns_status(campaign_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts per delivery status."""
    with unit_of_work() as session:
        campaign = delivery.get_campaign(session, campaign_id)
        result: dict[str, Any] = {
            "id": campaign.id,
            "status": campaign.status.value,
            "subject": campaign.subject,
            "counts": delivery.counts(session, campaign_id),
            "pause_reason": campaign.pause_reason,
        }
    if as_json:
        emit_json(result)
        return
    out.print(f"campaign {result['id']} [{result['status']}] {result['subject']}")
    for name, count in result["counts"].items():
        out.print(f"  {name:>8}: {count}")


@campaigns_app.command("pause")
def campaigns_pause(campaign_id: int) -> None:
    """Stop claiming new recipients; rows stay pending."""
    with unit_of_work() as session:
        delivery.pause(session, campaign_id)
    out.print(f"campaign {campaign_id} paused")


@campaigns_app.command("resume")
def campaigns_resume(campaign_id: int) -> None:
    """Carry on where a pause stopped; never resends a delivered message."""
    from worker import tasks

    with unit_of_work() as session:
        ranges = delivery.resume(session, settings(), campaign_id)
    tasks.enqueue_batches(ranges)
    out.print(f"campaign {campaign_id} resumed")


@campaigns_app.command("cancel")
def campaigns_cancel(campaign_id: int) -> None:
    """Stop for good; recipients not yet sent to are marked skipped."""
    with unit_of_work() as session:
        delivery.cancel(session, campaign_id)
    out.print(f"campaign {campaign_id} cancelled")


# --- demo and serve ---------------------------------------------------------------------------------------


@app.command("demo")
def demo(
    subscribers: Annotated[int, typer.Option(help="How many demo subscribers.")] = 36,
) -> None:
    """Embedded quick start: a SQLite database, a demo list, the sample digest, sent to the outbox."""
    from newsletter import demo as demo_module

    demo_module.run(settings(), subscribers=subscribers, console=out)


@app.command("serve")
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the web app (public pages, tracking, admin API)."""
    import uvicorn

    settings()  # fail early on bad configuration
    uvicorn.run("newsletter.web:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


# --- errors -----------------------------------------------------------------------------------------------

EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    Failure,
    ConfigError,
    digests.InvalidDigest,
    subscriptions.InvalidEmail,
    subscriptions.ListNotFound,
    subscriptions.UnknownToken,
    delivery.CampaignError,
    delivery.CampaignNotFound,
    delivery.DigestNotFound,
    FileNotFoundError,
    OperationalError,
)


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
    except EXPECTED_ERRORS as exc:
        err.print(f"error: {describe(exc)}", markup=False, soft_wrap=True)
        raise SystemExit(1) from None


def main() -> None:
    import click

    try:
        result = run_guarded(lambda: app(standalone_mode=False))
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        err.print("aborted")
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)
