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
