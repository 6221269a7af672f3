"""`newsletter campaigns`: send a digest, watch and steer the send, report on it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy.orm import Session

from newsletter import addresses, audit, delivery, previews, reputation, stats
from newsletter.cli.console import (
    AsJson,
    clean,
    emit_json,
    err,
    fail,
    id_argument,
    id_option,
    note,
    print_table,
    say,
    say_next_page,
    settings,
    unit_of_work,
)
from newsletter.cli.digests import DigestSlug, TemplateName
from newsletter.delivery import progress, scheduling
from newsletter.mailer import get_mailer
from newsletter.models import CampaignStatus, DeliveryStatus
from newsletter.pacing import Pace, get_pacer

app = typer.Typer(no_args_is_help=True, help="Campaigns: send, watch, pause, resume, cancel.")
CampaignId = Annotated[int, id_argument("The campaign's id (see `campaigns list`).")]

# `from worker import tasks` stays inside the commands that enqueue: worker.app reads the settings when
# imported, and a bad configuration must reach main()'s one-line error rather than stop the import of
# newsletter.cli with a traceback (and `--help` must work without any configuration).


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


@app.command("send")
def campaigns_send(
    digest: DigestSlug,
    list_slugs: Annotated[list[str], typer.Option("--list", help="List to send to (repeatable).")],
    at: Annotated[str | None, typer.Option("--at", help="ISO 8601 time with timezone.")] = None,
    subject: Annotated[str | None, typer.Option(help="Default: the digest's title.")] = None,
    again: Annotated[bool, typer.Option("--again", help="Send even if a list already got this digest.")] = False,
    template: TemplateName = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the campaign finishes.")] = False,
    segment: Annotated[
        str | None, typer.Option("--segment", help="Only the lists' subscribers in this segment.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Send a digest to one or more lists (only those in a segment, if named), now or at a given time."""
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
            segment=segment,
        )
        audit.campaign_created(session, audit.Actor.cli(), campaign)
        campaign_id = campaign.id
    starter: tuple[str, bool] | None = None
    if when is None:
        tasks.start_campaign.delay(campaign_id)
    else:
        with unit_of_work() as session:
            starter = scheduling.who_starts(session, settings())
        prefix = "" if starter[1] else "warning: "
        note(f"{prefix}campaign {campaign_id} is scheduled for {when.isoformat()}; {starter[0]}", soft_wrap=True)
    if wait:
        watch(campaign_id, quiet=as_json)
    with unit_of_work() as session:
        status = delivery.get_campaign(session, campaign_id).status.value
    if as_json:
        started_by = {} if starter is None else {"started_by": starter[0], "scheduler_seen": starter[1]}
        emit_json({"id": campaign_id, "status": status, **started_by})
    else:
        say(str(campaign_id))


@app.command("test")
def campaigns_test(
    digest: DigestSlug,
    to: Annotated[str, typer.Option("--to", help="Address to send the test to.")],
    list_slug: Annotated[str | None, typer.Option("--list", help="Render for this list (default: the oldest).")] = None,
    template: TemplateName = None,
) -> None:
    """Send one real message marked as a test ([TEST] subject, untracked links, recorded nowhere)."""
    config = settings()
    mailer = get_mailer(config.smtp_url, config.outbox_dir)
    with unit_of_work() as session:
        try:
            preview, result = previews.send_test(session, config, mailer, digest, to, list_slug, template=template)
        except addresses.InvalidEmail as exc:
            fail(f"--to {to!r}: {exc}")  # the address alone would not say which option was wrong
    say(
        f"sent test of {digest} for list {preview.list_slug} to {preview.recipient} via "
        f"{previews.destination(config)}: {result.code} {result.text}"
    )


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
        TextColumn("{task.fields[eta]}", markup=False),  # may quote an SMTP server's reply
        console=err,
        disable=quiet,
    ) as bar_view:
        bar = bar_view.add_task("send", total=None, cid=campaign_id, status="", rate="", eta="")
        while True:
            asked = time.monotonic()
            with unit_of_work() as session:
                state = progress.campaign_progress(session, campaign_id)
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
                bar_view.update(bar, eta=clean(f"waiting to retry: {state.last_error[:120]}"))
            if state.status not in (CampaignStatus.sending, CampaignStatus.scheduled, CampaignStatus.draft):
                if state.pause_reason and not quiet:
                    note(f"campaign {campaign_id} paused: {state.pause_reason}")
                return
            if embedded:
                tasks.sweep.delay()
            time.sleep(wait)


@app.command("status")
def campaigns_status(campaign_id: CampaignId, as_json: AsJson = False) -> None:
    """Counts per delivery status, opens, clicks per link, unsubscribes, bounces, rate and duration."""
    with unit_of_work() as session:
        result = stats.campaign_report(session, campaign_id)
    # the pace of each SMTP server as the fleet shares it (Redis); without Redis each process paces alone
    # and this one has sent nothing, so there is nothing to show
    paces = get_pacer(settings()).snapshot()
    result["pacing"] = [pace.as_dict() for pace in paces]
    if as_json:
        emit_json(result)
        return
    say(f"campaign {result['id']} [{result['status']}] {result['subject']}")
    for name, count in result["counts"].items():
        say(f"  {name:>8}: {count}")
    say(f"  opens: {result['opens']} ({result['unique_opens']} unique), clicks: {result['clicks']}")
    say(f"  unsubscribes: {result['unsubscribes']}, bounces: {result['bounces']}")
    if result["duration_seconds"] is not None:
        rate = result["send_rate_per_second"]
        say(f"  duration: {result['duration_seconds']:.1f} s" + (f", {rate} messages/s" if rate else ""))
    for link in result["links"]:
        say(f"  {link['clicks']:>6} clicks ({link['unique_clicks']} unique)  {link['url']}")
    for pace in paces:
        say(f"  pace of {pace.server}: {describe_pace(pace)}")


def describe_pace(pace: Pace) -> str:
    if pace.rate is None:
        now = "unlimited" if pace.ceiling is None else f"at its ceiling, {pace.ceiling:g} messages/s"
    else:
        now = f"{pace.rate:.1f} messages/s" + (f" (ceiling {pace.ceiling:g})" if pace.ceiling else "")
    if pace.reason:
        when = f" at {pace.changed_at.isoformat(timespec='seconds')}" if pace.changed_at else ""
        now += f'; last slowed by "{pace.reason}"{when}'  # say() drops control characters
    return now


def parse_statuses(value: str) -> list[DeliveryStatus]:
    statuses = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            statuses.append(DeliveryStatus(part))
        except ValueError:
            fail(f"unknown delivery status {part!r}: use {', '.join(s.value for s in DeliveryStatus)}")
    return statuses


@app.command("list")
def campaigns_list(
    status: Annotated[CampaignStatus | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: AsJson = False,
) -> None:
    """Campaigns, newest first."""
    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {"id": c.id, "status": c.status.value, "subject": c.subject, "digest": c.digest.slug,
             "recipients": c.recipient_count, "started_at": c.started_at}
            for c in stats.list_campaigns(session, status=status, limit=limit)
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("id", "status", "recipients", "digest", "subject"),
        ((r["id"], r["status"], r["recipients"], r["digest"], r["subject"]) for r in rows),
    )


@app.command("deliveries")
def campaigns_deliveries(
    campaign_id: CampaignId,
    status: Annotated[str, typer.Option(help="Comma-separated, e.g. failed,unknown.")] = "",
    after: Annotated[int | None, id_option("Cursor printed by the previous page.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: AsJson = False,
) -> None:
    """The per-recipient ledger, e.g. who failed and why."""
    with unit_of_work() as session:
        page = stats.ledger_page(session, campaign_id, statuses=parse_statuses(status), after=after, limit=limit)
    if as_json:
        emit_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    print_table(
        ("id", "email", "status", "attempts", "smtp"),
        (
            (r["id"], r["email"], r["status"], r["attempts"], f"{r['smtp_code'] or ''} {r['smtp_text'] or ''}".strip())
            for r in page.items
        ),
    )
    say_next_page(page.next_cursor)


@app.command("resend")
def campaigns_resend(
    campaign_id: CampaignId,
    status: Annotated[str | None, typer.Option(help="Which recipients: failed, unknown or failed,unknown.")] = None,
    non_openers: Annotated[
        bool,
        typer.Option(
            "--non-openers",
            help="Instead: a new campaign to those who received this one and did not open it.",
        ),
    ] = False,
    subject: Annotated[str | None, typer.Option(help="With --non-openers: a new subject.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="With --non-openers: ISO 8601 time with timezone.")] = None,
    as_json: AsJson = False,
) -> None:
    """Send again to failed and/or unknown recipients only (sent ones never get a second copy), or with
    --non-openers create a new campaign, maybe with another subject, to those who did not open it."""
    from worker import tasks

    if non_openers == (status is not None):
        fail("give either --status failed,unknown or --non-openers")
    if non_openers:
        resend_to_non_openers(campaign_id, subject, parse_when(at), as_json=as_json)
        return
    if subject is not None or at is not None:
        fail("--subject and --at go with --non-openers")
    with unit_of_work() as session:
        moved, ranges = stats.resend(session, settings(), campaign_id, parse_statuses(status or ""))
        audit.record(
            session,
            audit.Actor.cli(),
            "campaign.resend",
            audit.campaign_target(campaign_id),
            requeued=moved,
            statuses=status,
        )
        state = delivery.get_campaign(session, campaign_id).status.value
    tasks.enqueue_batches(ranges)
    if as_json:
        emit_json({"id": campaign_id, "status": state, "requeued": moved})
    else:
        say(f"campaign {campaign_id}: {moved} recipient(s) queued again")


def resend_to_non_openers(campaign_id: int, subject: str | None, when: dt.datetime | None, *, as_json: bool) -> None:
    from worker import tasks

    with unit_of_work() as session:
        campaign = delivery.resend_to_non_openers(session, campaign_id, subject=subject, scheduled_at=when)
        new_id, status = campaign.id, campaign.status.value
        recipients = stats.campaign_reach(session, campaign)
    if when is None:
        tasks.start_campaign.delay(new_id)
    if as_json:
        emit_json({"id": new_id, "status": status, "resend_of": campaign_id, "recipients": recipients})
    else:
        say(str(new_id))
        note(f"campaign {new_id}: {recipients} recipient(s) of campaign {campaign_id} who did not open it")


@app.command("pause")
def campaigns_pause(campaign_id: CampaignId) -> None:
    """Stop claiming new recipients; rows stay pending."""
    steer(campaign_id, delivery.pause, "paused", "campaign.pause")


@app.command("resume")
def campaigns_resume(campaign_id: CampaignId) -> None:
    """Carry on where a pause stopped; never resends a delivered message."""
    from worker import tasks

    with unit_of_work() as session:
        reason = delivery.get_campaign(session, campaign_id).pause_reason or ""
        ranges = delivery.resume(session, settings(), campaign_id)
        audit.record(session, audit.Actor.cli(), "campaign.resume", audit.campaign_target(campaign_id))
    tasks.enqueue_batches(ranges)
    if reason.startswith(reputation.REASON_PREFIX):
        say(f"campaign {campaign_id} resumed, overriding the {reason}")
    else:
        say(f"campaign {campaign_id} resumed")


@app.command("cancel")
def campaigns_cancel(campaign_id: CampaignId) -> None:
    """Stop for good; recipients not yet sent to are marked skipped."""
    steer(campaign_id, delivery.cancel, "cancelled", "campaign.cancel")


def steer(campaign_id: int, change: Callable[[Session, int], object], done: str, action: str) -> None:
    with unit_of_work() as session:
        change(session, campaign_id)
        audit.record(session, audit.Actor.cli(), action, audit.campaign_target(campaign_id))
    say(f"campaign {campaign_id} {done}")
