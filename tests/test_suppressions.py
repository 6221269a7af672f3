"""The suppression list's bulk import on both backends: chunked inserts, repeats, bad rows."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import suppressions
from newsletter.models import Suppression, SuppressionReason


def test_csv_import_in_chunks_counts_repeats_and_keeps_first_reasons(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suppressions, "_CHUNK", 2)  # every few rows another INSERT
    suppressions.suppress(session, "bounced@example.com", SuppressionReason.hard_bounce, detail="550 5.1.1")
    rows = [
        "Name;x,EMAIL",  # the header names the column, whatever its case
        "A,a@example.com",
        "B,B@Example.com",
        "A again,A@example.COM",  # a repeat, in the next chunk
        "Bounced,bounced@example.com",
        "Bad,not an address",
        ",",
        "C,c@example.com",
        "C again,c@example.com",  # a repeat inside one chunk
    ]
    result = suppressions.add_csv(session, io.StringIO("\n".join(rows) + "\n"), detail="from the old tool")
    assert (result.added, result.already) == (3, 3)
    assert [line for line, _ in result.errors or []] == [6]
    stored = {s.email: (s.reason, s.detail) for s in session.scalars(select(Suppression))}
    assert stored == {
        "bounced@example.com": (SuppressionReason.hard_bounce, "550 5.1.1"),
        "a@example.com": (SuppressionReason.manual, "from the old tool"),
        "b@example.com": (SuppressionReason.manual, "from the old tool"),
        "c@example.com": (SuppressionReason.manual, "from the old tool"),
    }

    again = suppressions.add_csv(session, io.StringIO("a@example.com\nd@example.com\n"))  # no header
    assert (again.added, again.already, again.errors) == (1, 1, [])


def test_the_domain_blocklist_add_list_remove_and_its_planning_condition(session: Session) -> None:
    """Issue 11 item 16: `*@mailinator.com` blocks the whole domain; the condition planning will use."""
    from newsletter.models import BlockedDomain, Subscriber
    from tests.factories import make_list, make_subscriber

    weekly = make_list(session)
    for address in ("ana@example.com", "throw@mailinator.com", "x@sub.mailinator.com", "bo@example.org"):
        make_subscriber(session, weekly, address)
    entry, created = suppressions.block_domain(session, "*@MAILINATOR.com", detail="throwaway")
    assert created and entry.domain == "mailinator.com"
    assert suppressions.block_domain(session, "@mailinator.com")[1] is False  # one entry per domain
    assert suppressions.block_domain(session, "mailinator.com ")[0].id == entry.id
    for bad in ("", "*", "a@b@c", "*.mailinator.com", "not a domain", "mail\x00inator.com"):
        with pytest.raises(suppressions.InvalidDomain):
            suppressions.block_domain(session, bad)
    assert [d.domain for d in suppressions.blocked_domains(session)] == ["mailinator.com"]
    assert suppressions.is_blocked_domain(session, "throw@mailinator.com")
    assert not suppressions.is_blocked_domain(session, "x@sub.mailinator.com")  # exact domains only

    mailable = select(Subscriber.email).where(suppressions.not_in_blocked_domain()).order_by(Subscriber.email)
    assert session.scalars(mailable).all() == ["ana@example.com", "bo@example.org", "x@sub.mailinator.com"]
    # Index-friendly: the anti-join compares the stored domain column, with no function per row.
    sql = str(mailable.compile(session.get_bind()))
    assert "blocked_domains.domain = subscribers.email_domain" in sql and "lower(" not in sql

    with pytest.raises(suppressions.DomainNotBlocked):
        suppressions.unblock_domain(session, "example.com", by="root")
    suppressions.unblock_domain(session, "*@mailinator.com", by="root")
    assert session.scalar(select(BlockedDomain.id)) is None
    assert len(session.scalars(mailable).all()) == 4


def test_a_nul_in_the_suppression_search_finds_nothing_instead_of_failing(session: Session) -> None:
    suppressions.add(session, "gone@example.com")
    assert suppressions.list_suppressions(session, email="gone\x00").items == []
    assert [s.email for s in suppressions.list_suppressions(session, email="gone").items] == ["gone@example.com"]
