"""`newsletter audit`: who did what, newest first (the admin's /admin/audit page on the command line)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from newsletter import audit
from newsletter.cli.console import AsJson, emit_json, fail, id_option, print_table, say, unit_of_work


def parse_since(value: str | None) -> dt.datetime | None:
    """A date (midnight UTC), an ISO 8601 time with a timezone, or a span back from now: 30m, 12h, 7d."""
    if value is None:
        return None
    spans = {"m": "minutes", "h": "hours", "d": "days"}
    if value[:-1].isdigit() and value[-1:] in spans:
        try:
            return dt.datetime.now(dt.UTC) - dt.timedelta(**{spans[value[-1]]: int(value[:-1])})
        except OverflowError:  # further back than datetime reaches (year 1)
            fail(f"--since {value!r} reaches back before the year 1: give a shorter span or a date")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r}: give a date (2026-12-01), a time with a timezone, or a span such as 7d or 12h")
    if when.tzinfo is None:
        if len(value) > 10:
            fail(f"--since {value!r} has no timezone: add one, e.g. {value}+00:00")
        when = when.replace(tzinfo=dt.UTC)
    return when


def audit_log(
    actor: Annotated[str | None, typer.Option(help="Only what this user (or OS user, for the CLI) did.")] = None,
    action: Annotated[
        str | None, typer.Option(help="An action (campaign.send) or a family of them (campaign).")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="What was acted on: campaign:12, or every campaign: campaign:")
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this date or time, or this far back: 7d, 12h.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many entries.")] = 50,
    before: Annotated[int | None, id_option("Only entries older than this id (the next page).")] = None,
    as_json: AsJson = False,
) -> None:
    """The audit log, newest first: sends, schedules, list and user changes, imports, erasures, sign-ins."""
    with unit_of_work() as session:
        entries = audit.search(
            session, actor=actor, action=action, target=target, since=parse_since(since), before_id=before,
            limit=limit + 1,
        )  # fmt: skip
        rows: list[dict[str, Any]] = [
            {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "actor_kind": e.actor_kind.value, "action": e.action,
             "target": e.target, "details": e.details, "ip": e.ip}
            for e in entries[:limit]
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("id", "when (UTC)", "who", "action", "target", "details"),
        (
            (
                row["id"],
                row["at"][:19].replace("T", " "),
                f"{row['actor']} ({row['actor_kind']})",
                row["action"],
                row["target"] or "",
                ", ".join(f"{k}={v}" for k, v in sorted(row["details"].items())),
            )
            for row in rows
        ),
    )
    if len(entries) > limit:
        say(f"older entries: --before {rows[-1]['id']}")
