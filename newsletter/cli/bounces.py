"""`newsletter bounces`: bounces and complaints that come back by mail, recorded on the ledger, and those
providers' webhooks accepted (`process` applies what is waiting)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from newsletter import bounces
from newsletter.cli.console import AsJson, emit_json, note, say, settings, unit_of_work
from newsletter.providers import inbox

app = typer.Typer(no_args_is_help=True, help="Bounces and complaints that come back by mail or by provider webhook.")


def report_sources(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
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


@app.command("ingest")
def bounces_ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Messages (.eml) or directories of them; none or - reads stdin.")
    ] = None,
    recipient: Annotated[
        str | None,
        typer.Option(
            "--recipient",
            help="The envelope recipient (postfix pipe: recipient=${recipient}); with VERP it names the delivery.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Record delivery status notifications (RFC 3464) and feedback reports (RFC 5965) on the ledger.

    A hard bounce or a complaint suppresses the address, a soft bounce is recorded only (until
    SOFT_BOUNCE_LIMIT of them). With NEWSLETTER_VERP_ADDRESS set, a report that quotes no Message-ID is
    matched by the return path it was sent to: --recipient, else its Delivered-To or To header. Each
    message is its own unit of work; the exit status is 1 if any input was not such a report.
    """
    results: list[dict[str, Any]] = []
    for name, data in report_sources(paths or []):
        try:
            with unit_of_work() as session:
                outcomes = bounces.ingest(session, settings(), data, recipient=recipient)
        except bounces.NotAReport as error:
            # not the one-line failure of main(): the other messages are still read and recorded
            results.append({"source": name, "error": str(error), "reports": []})
            if not as_json:
                note(f"{name}: {error}", soft_wrap=True)
            continue
        results.append({"source": name, "error": None, "reports": [o.as_dict() for o in outcomes]})
        if not as_json:
            print_outcomes(name, outcomes)
    if as_json:
        emit_json(results)
    if any(result["error"] is not None for result in results):
        raise typer.Exit(1)


def print_outcomes(name: str, outcomes: list[bounces.Outcome]) -> None:
    if not outcomes:
        say(f"{name}: a report with nothing to record (every recipient delivered)")
    for o in outcomes:
        about = f" (campaign {o.campaign_id}, delivery {o.delivery_id})" if o.delivery_id else ""
        what = " ".join(p for p in (o.report.kind, o.report.status, o.report.recipient) if p)
        say(f"{name}: {what}{about}: {o.result}: {o.reason}")


@app.command("process")
def bounces_process(as_json: AsJson = False) -> None:
    """Apply the provider webhook events accepted but not applied yet, a batch per transaction.

    `newsletter serve` (without a broker) or the Celery workers do this within moments of each webhook;
    this is for a look at what is waiting, or after those were stopped.
    """
    applied: list[inbox.Processed] = []
    while True:
        with unit_of_work() as session:
            done = inbox.process(session, settings())
        applied.extend(done)
        if len(done) < inbox.BATCH:
            break
    with unit_of_work() as session:
        waiting, _ = inbox.backlog(session)
    if as_json:
        emit_json({
            "applied": [{"inbox_id": p.inbox_id, "provider": p.provider, **p.outcome.as_dict()} for p in applied],
            "waiting": waiting,
        })  # fmt: skip
        return
    for p in applied:
        print_outcomes(f"{p.provider} event {p.inbox_id}", [p.outcome])
    say(f"{len(applied)} provider events applied; {waiting} waiting (accepted meanwhile)")
