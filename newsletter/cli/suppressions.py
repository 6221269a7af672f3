"""`newsletter suppressions`: the addresses never mailed, listed, added and removed."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from newsletter import audit, suppressions
from newsletter.cli.console import AsJson, emit_json, fail, print_table, say, unit_of_work
from newsletter.models import SuppressionReason

app = typer.Typer(no_args_is_help=True, help="The suppression list: addresses never mailed.")


@app.command("list")
def suppressions_list(
    reason: Annotated[SuppressionReason | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option(help="Substring, or an exact erased address.")] = None,
    as_json: AsJson = False,
) -> None:
    """Every suppressed address (erased ones show only their hash)."""
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
    print_table(
        ("address", "reason", "since", "detail"),
        (
            (
                r["email"] or f"(erased) {r['email_hash'][:12]}",
                r["reason"],
                f"{r['created_at']:%Y-%m-%d}",
                r["detail"] or "",
            )
            for r in rows
        ),
    )


@app.command("add")
def suppressions_add(
    email: Annotated[str | None, typer.Argument(help="One address (or use --file).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="CSV: an email column, or addresses one per line.")
    ] = None,
    detail: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    as_json: AsJson = False,
) -> None:
    """Never mail an address again (or every address of a CSV file)."""
    if (email is None) == (file is None):
        fail("give one address or --file FILE.csv")
    with unit_of_work() as session:
        if email is not None:
            entry, created = suppressions.add(session, email, detail=detail)
            if created:
                audit.record(session, audit.Actor.cli(), "suppression.add", f"address:{entry.email}")
            result: dict[str, Any] = {"added": int(created), "already": int(not created), "errors": []}
        else:
            assert file is not None
            with file.open(encoding="utf-8-sig", newline="") as stream:
                bulk = suppressions.add_csv(session, stream, detail=detail)
            details = {"file": file.name, "added": bulk.added, "already": bulk.already}
            audit.record(session, audit.Actor.cli(), "suppression.add", None, **details)
            result = {
                "added": bulk.added,
                "already": bulk.already,
                "errors": [{"line": line, "reason": reason} for line, reason in bulk.errors or []],
            }
    if as_json:
        emit_json(result)
        return
    say(f"suppressed {result['added']} new address(es), {result['already']} already there")
    for error in result["errors"]:
        say(f"line {error['line']}: {error['reason']}")


@app.command("remove")
def suppressions_remove(email: str) -> None:
    """Allow mail to an address again (logged with who did it)."""
    with unit_of_work() as session:
        suppressions.remove(session, email, by=f"cli:{getpass.getuser()}")
        audit.record(session, audit.Actor.cli(), "suppression.remove", f"address:{email.strip().lower()}")
    say(f"{email} removed from the suppression list")


@app.command("block-domain")
def suppressions_block_domain(
    domain: Annotated[str, typer.Argument(help="mailinator.com, @mailinator.com or *@mailinator.com")],
    detail: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
) -> None:
    """Never subscribe nor mail any address at a domain."""
    with unit_of_work() as session:
        entry, created = suppressions.block_domain(session, domain, detail=detail)
        if created:
            audit.record(session, audit.Actor.cli(), "blocked_domain.add", f"domain:{entry.domain}")
    say(f"blocked {entry.domain}" if created else f"{entry.domain} was already blocked")


@app.command("unblock-domain")
def suppressions_unblock_domain(domain: str) -> None:
    """Allow a blocked domain again (logged with who did it)."""
    with unit_of_work() as session:
        suppressions.unblock_domain(session, domain, by=f"cli:{getpass.getuser()}")
        audit.record(
            session, audit.Actor.cli(), "blocked_domain.remove", f"domain:{suppressions.normalise_domain(domain)}"
        )
    say(f"unblocked {domain}")


@app.command("domains")
def suppressions_domains(as_json: AsJson = False) -> None:
    """The blocked domains, with why and since when."""
    with unit_of_work() as session:
        rows = [
            {"domain": d.domain, "detail": d.detail or "", "since": d.created_at.isoformat()}
            for d in suppressions.blocked_domains(session)
        ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        say(f"{row['domain']}  {row['since'][:10]}  {row['detail']}")
