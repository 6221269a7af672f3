"""CSV import and export of a list's subscribers: streamed, set-based, and safe to open in a spreadsheet.

Import reads the file line by line and validates each row in Python (so every bad row is reported with
its line number), stages the good rows in a temporary table (COPY on PostgreSQL) and then merges them
with a handful of set-based statements: memory stays flat and a million rows take seconds, not hours.

Decisions a reader may want to know:

- A name that looks like a spreadsheet formula (``=HYPERLINK(...)``) is accepted: names are data, and
  real ones start with ``-`` or ``@`` too. The danger is only in spreadsheets, so the export neutralises
  such cells (OWASP: prefix ``'``), and the import strips that prefix again so files round-trip.
- An address repeated in the file is imported once, its rows merged in file order (a later non-empty
  name replaces an earlier one, attributes accumulate); the extra rows count as skipped duplicates.
- An address already on the list is updated (a non-empty name replaces the stored one, attributes are
  merged in); an import never re-subscribes someone who unsubscribed from the list, nor a blocklisted
  or suppressed address: those are skipped and counted.
- A ``language`` column (``en``, ``ru``, ``kk``: a catalog's code) sets the reader's language; a blank cell
  keeps the stored one, an unknown code is a bad row.
- Without ``confirmed`` new subscriptions stay pending until the person confirms by email, whatever
  the list's opt-in mode: an imported address carries no proof of consent.
- Blank lines are reported (they often mean a broken export) but do not stop the import.
- A list's export holds its confirmed subscribers by default (the people it mails: not blocklisted, not
  suppressed), with a ``status`` column; another tool fed the full file would mail people who left. The
  import skips a ``status`` column: whether someone is confirmed is decided by ``confirmed``, not the file.
"""

from __future__ import annotations

import codecs
import collections
import csv
import functools
import itertools
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import email_validator
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from newsletter import addresses, confirmations, i18n, lists, outbox
from newsletter.db import UTCDateTime, analyze, is_postgres, utcnow
from newsletter.errors import Invalid
from newsletter.exports import unneutralise
from newsletter.models import (
    BlockedDomain,
    SubscriptionSource,
    SubscriptionStatus,
    email_domain,
    email_hash,
)
from newsletter.subscribers import MAX_ATTRIBUTE_LENGTH, MAX_ATTRIBUTE_NAME_LENGTH
from newsletter.text import single_line

CHUNK_ROWS = 5000
MERGE_WORK_MEM = "64MB"  # per sort or hash of the merge's statements, for the length of the merge only
MAX_REPORTED_ERRORS = 1000
MAX_NAME_LENGTH = addresses.NAME_LENGTH
MAX_COLUMNS = 500  # email, name and the attributes: far more than any real list, far less than a mistake
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# Plain ASCII addresses that email-validator certainly accepts unchanged (apart from case): checked here
# in ~1 us instead of ~25 us, which is half the time of a million-row import. Anything else (quoted or
# international local parts, IDNA, odd dashes, special-use domains) takes the full validator.
_PLAIN_EMAIL = re.compile(
    r"(?=[^@]{1,64}@)[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@(?=.{4,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z"
)


class InvalidCsv(Invalid):
    """The file as a whole cannot be imported (no email column, empty, not CSV); nothing was changed."""


class ImportRefused(Invalid):
    """`strict` was asked for and some rows are bad; nothing was imported. `report` lists them."""

    def __init__(self, report: ImportReport) -> None:
        first = report.errors[0]
        super().__init__(
            f"refused the whole file: {report.error_count} bad row(s), the first on line {first.line}: {first.reason}"
        )
        self.report = report
        self.detail = report.as_dict()


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    skipped_reasons: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("duplicate", "suppressed", "blocklisted", "unsubscribed"), 0)
    )
    rows: int = 0
    pending_confirmation: int = 0

    def add_error(self, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(line, reason))

    def skip(self, reason: str, count: int) -> None:
        self.skipped_reasons[reason] += count
        self.skipped += count

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "skipped": self.skipped,
            "errors": [{"line": e.line, "reason": e.reason} for e in self.errors],
            "error_count": self.error_count,
            "skipped_reasons": dict(self.skipped_reasons),
            "rows": self.rows,
            "pending_confirmation": self.pending_confirmation,
        }


@dataclass(frozen=True)
class GoodRow:
    line: int
    email: str
    name: str
    attributes: str  # JSON text, ready for the staging table
    language: str = ""  # a catalog's code (en, ru, kk), or "" for none given


# --- reading ----------------------------------------------------------------------------------------------


def _lines(stream: IO[bytes], progress: Callable[[int], None] | None) -> Iterator[str]:
    # Decoding line by line with surrogateescape keeps going past bytes that are not UTF-8; the row that
    # holds them is reported (it is usually one Latin-1 name) instead of the whole file failing.
    done = 0
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        done += len(raw)
        if progress is not None and number % 10_000 == 0:
            progress(done)
        yield raw.decode("utf-8", "surrogateescape")
    if progress is not None:
        progress(done)


def sniff_delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","


def read_header(record: list[str]) -> list[str]:
    """The header row's column names, or InvalidCsv naming what is wrong with it."""
    # email and name are matched case-insensitively; attribute names keep their case so exports round-trip.
    header = [single_line(unneutralise(column.strip())).strip() for column in record]
    if len(header) > MAX_COLUMNS:
        raise InvalidCsv(
            f"line 1: the header has {len(header)} columns; at most {MAX_COLUMNS} are imported "
            "(email, name and the attributes): is this the right file, and is its separator , or ;?"
        )
    header = [c.lower() if c.lower() in ("email", "name", "language") else c for c in header]
    if "email" not in header:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise InvalidCsv(f"line 1: no 'email' column in the header (found: {shown or 'nothing'})")
    for position, column in enumerate(header, start=1):
        if not column:
            raise InvalidCsv(f"line 1: column {position} has no name")
        if len(column) > MAX_ATTRIBUTE_NAME_LENGTH:
            raise InvalidCsv(f"line 1: column {position} has a name longer than {MAX_ATTRIBUTE_NAME_LENGTH} characters")
        if "\x00" in column:
            raise InvalidCsv(f"line 1: column {position} has a NUL character in its name")
    counts = collections.Counter(header)  # one pass: header.count per column took 42 s for 50,000 columns
    duplicated = sorted(c for c, n in counts.items() if n > 1)
    if duplicated:
        raise InvalidCsv(f"line 1: column(s) {', '.join(duplicated)} appear more than once")
    return header


# long: one pass reads, checks and reports every row (email, name, language), in file order
def read_rows(
    stream: IO[bytes],
    report: ImportReport,
    progress: Callable[[int], None] | None = None,
    blocked_domains: frozenset[str] = frozenset(),
) -> Iterator[GoodRow]:
    """Yield the valid rows of a CSV file, recording each bad one in `report` with its line number.

    An address at one of `blocked_domains` is a bad row, with the reason.
    """
    lines = _lines(stream, progress)
    first = next(lines, None)
    if first is None or not first.strip():
        raise InvalidCsv("the file is empty: the first line must be a header naming an email column")
    if _UNDECODABLE.search(first):
        raise InvalidCsv("the header line is not UTF-8 text: save the file as UTF-8")

    def all_lines() -> Iterator[str]:
        yield first
        yield from lines

    reader = csv.reader(all_lines(), delimiter=sniff_delimiter(first))
    header = read_header(next(reader))
    email_at = header.index("email")
    name_at = header.index("name") if "name" in header else None
    language_at = header.index("language") if "language" in header else None
    attribute_columns = [(i, c) for i, c in enumerate(header) if c not in ("email", "name", "status", "language")]
    width = len(header)

    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            report.add_error(line, f"not valid CSV: {exc}")
            continue
        report.rows += 1
        reason = _check_record(record, width)
        if reason is None:
            cells = [unneutralise(cell) for cell in record]
            cells += [""] * (width - len(cells))
            try:
                email = normalise_email(cells[email_at])
            except addresses.InvalidEmail as exc:
                reason = f"email {cells[email_at]!r}: {exc}" if cells[email_at].strip() else "no email address"
            else:
                name = cells[name_at] if name_at is not None else ""
                language = _language(cells, language_at)
                if blocked_domains and email_domain(email) in blocked_domains:
                    reason = f"email {email!r}: addresses at {email_domain(email)} are blocked"
                elif "\r" in name or "\n" in name:
                    reason = "name: contains a line break"
                elif len(name) > MAX_NAME_LENGTH:
                    reason = f"name: longer than {MAX_NAME_LENGTH} characters"
                elif language.startswith("!"):
                    reason = language[1:]
                else:
                    yield _good_row(line, email, name, language, cells, attribute_columns)
                    continue
        report.add_error(line, reason)


def _language(cells: list[str], at: int | None) -> str:
    """The row's language as a catalog's code, "" when none is given, or "!" and why it cannot be used."""
    given = cells[at].strip() if at is not None else ""
    if given and i18n.supported(given) is None:
        return f"!language {given[:40]!r}: must be one of {', '.join(i18n.available())}"
    return (i18n.supported(given) or "") if given else ""


def _good_row(
    line: int, email: str, name: str, language: str, cells: list[str], attribute_columns: list[tuple[int, str]]
) -> GoodRow:
    """A valid row as it is stored: without control characters, as from every other writer (text.single_line),
    so an escape sequence in a CSV file's name or value never reaches an admin's terminal either."""
    attributes = {column: value for i, column in attribute_columns if (value := single_line(cells[i])) != ""}
    attributes_json = json.dumps(attributes) if attributes else "{}"
    return GoodRow(line, email, " ".join(single_line(name).split()), attributes_json, language)


@functools.cache
def _special_use_suffixes() -> tuple[str, ...]:
    return tuple("." + name for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)


def normalise_email(address: str) -> str:
    """addresses.normalise_email, with a fast path for the plain addresses most files consist of."""
    candidate = address.strip().lower()
    if (
        len(candidate) <= 254
        and "--" not in candidate
        and _PLAIN_EMAIL.match(candidate)
        and not ("." + candidate.rpartition("@")[2]).endswith(_special_use_suffixes())
    ):
        return candidate
    return addresses.normalise_email(address)


def _check_record(record: list[str], width: int) -> str | None:
    if not record:
        return "blank line"
    if len(record) > width:
        return f"{len(record)} fields but the header has {width}"
    for position, cell in enumerate(record, start=1):
        if not cell.isascii() and _UNDECODABLE.search(cell):
            return f"field {position}: not UTF-8 text (save the file as UTF-8)"
        if len(cell) > MAX_ATTRIBUTE_LENGTH:
            return f"field {position}: longer than {MAX_ATTRIBUTE_LENGTH} characters"
        if "\x00" in cell:  # PostgreSQL would refuse it, and abort the whole import with it
            return f"field {position}: contains a NUL character"
    if not any(cell.strip() for cell in record):
        return "empty row"
    return None


def _chunks(rows: Iterable[GoodRow], size: int) -> Iterator[list[GoodRow]]:
    chunk: list[GoodRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- importing --------------------------------------------------------------------------------------------


def import_csv(
    session: Session,
    list_slug: str,
    stream: IO[bytes],
    *,
    confirmed: bool = False,
    strict: bool = False,
    update_existing: bool = True,
    progress: Callable[[int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import a CSV file of subscribers into a list; see the module docstring for the rules.

    `update_existing=False` leaves the people already on the list as they are (counted as skipped,
    `existing`). `progress` is called with the number of bytes read so far, `stage` with the name of each
    merge step.
    """
    mailing_list = lists.get_list(session, list_slug)
    report = ImportReport()
    # The blocklist is a short list of domains: checked per line in Python, so each line gets its reason.
    blocked = frozenset(session.scalars(select(BlockedDomain.domain)))
    rows = read_rows(stream, report, progress, blocked)
    first = next(rows, None)  # the header is checked here, before anything touches the database
    staging = f"import_rows_{secrets.token_hex(4)}"
    final = f"import_final_{secrets.token_hex(4)}"
    postgres = is_postgres(session)
    # On an error the caller rolls back, which also drops these tables (PostgreSQL and SQLite DDL is
    # transactional); on success they are dropped below.
    on_commit = " ON COMMIT DROP" if postgres else ""
    session.execute(
        text(
            f"CREATE TEMPORARY TABLE {staging} "
            f"(line BIGINT, email TEXT, email_hash TEXT, name TEXT, attributes TEXT, language TEXT){on_commit}"
        )
    )
    if first is not None:
        _stage_rows(session, staging, itertools.chain([first], rows), postgres)
    if strict and report.error_count:
        raise ImportRefused(report)
    if stage:
        stage("merging")
    if postgres:
        # The merge joins the whole file with the whole table: with the default 4 MB of work_mem its hash
        # joins spill to disk in batches, and JIT compiling each big statement costs more than it saves.
        # LOCAL: back to the defaults at the end of this transaction, and just below.
        session.execute(text(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    _merge(session, staging, final, mailing_list.id, report, confirmed=confirmed, postgres=postgres,
           update_existing=update_existing)  # fmt: skip
    if postgres:
        session.execute(text("SET LOCAL work_mem TO DEFAULT"))
        session.execute(text("SET LOCAL jit TO DEFAULT"))
    session.execute(text(f"DROP TABLE {staging}"))
    session.execute(text(f"DROP TABLE {final}"))
    if report.imported or report.updated:
        # a campaign sent right after plans its ledger and claims from these tables
        analyze(session, "subscribers", "subscriptions")
    report.pending_confirmation = confirmations.pending_imported(session, mailing_list.id)
    session.expire_all()
    return report


def _stage_rows(session: Session, staging: str, rows: Iterable[GoodRow], postgres: bool) -> None:
    if postgres:
        # COPY is ~6x faster than batched INSERTs (DESIGN §7) and streams: nothing accumulates here.
        cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {staging} (line, email, email_hash, name, attributes, language) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row.line, row.email, email_hash(row.email), row.name, row.attributes, row.language))
        return
    insert = text(
        f"INSERT INTO {staging} (line, email, email_hash, name, attributes, language) "
        "VALUES (:line, :email, :hash, :name, :attrs, :language)"
    )
    for chunk in _chunks(rows, CHUNK_ROWS):
        session.execute(
            insert,
            [
                {
                    "line": r.line,
                    "email": r.email,
                    "hash": email_hash(r.email),
                    "name": r.name,
                    "attrs": r.attributes,
                    "language": r.language,
                }
                for r in chunk
            ],
        )


def _merge(
    session: Session,
    staging: str,
    final: str,
    list_id: int,
    report: ImportReport,
    *,
    confirmed: bool,
    postgres: bool,
    update_existing: bool = True,
) -> None:
    """Merge the staged rows into subscribers and subscriptions, a few set-based statements in all."""
    _keep_last_rows(session, staging, final, report, postgres=postgres)
    _drop_ineligible(session, final, list_id, report)
    if update_existing:
        _update_existing(session, final, list_id, report, confirmed=confirmed, postgres=postgres)
    else:
        report.skipped_reasons.setdefault("existing", 0)
        report.skip(
            "existing", _run(session, f"DELETE FROM {final} WHERE email IN ({_on_list_emails(final)})", list=list_id)
        )
    _add_subscriptions(session, final, list_id, report, confirmed=confirmed, postgres=postgres)


def _run(session: Session, sql: str, **params: Any) -> int:
    statement = text(sql)
    if "now" in params:
        statement = statement.bindparams(bindparam("now", type_=UTCDateTime()))
    return session.execute(statement, params).rowcount or 0  # type: ignore[attr-defined]


def _keep_last_rows(session: Session, staging: str, final: str, report: ImportReport, *, postgres: bool) -> None:
    # The last row of an address wins; the earlier ones are duplicates.
    session.execute(
        text(
            f"CREATE TEMPORARY TABLE {final}{' ON COMMIT DROP' if postgres else ''} AS "
            "SELECT line, email, email_hash, name, attributes, language FROM "
            f"(SELECT *, row_number() OVER (PARTITION BY email ORDER BY line DESC) AS rn FROM {staging}) AS r "
            "WHERE rn = 1"
        )
    )
    session.execute(text(f"CREATE UNIQUE INDEX ix_{final}_email ON {final} (email)"))
    if postgres:
        session.execute(text(f"ANALYZE {final}"))  # temporary tables are never auto-analysed
    staged = session.scalar(text(f"SELECT count(*) FROM {staging}")) or 0
    kept = session.scalar(text(f"SELECT count(*) FROM {final}")) or 0
    report.skip("duplicate", staged - kept)
    if staged > kept:
        _merge_duplicates(session, staging, final)


def _drop_ineligible(session: Session, final: str, list_id: int, report: ImportReport) -> None:
    run = partial(_run, session)
    report.skip("suppressed", run(f"DELETE FROM {final} WHERE email_hash IN (SELECT email_hash FROM suppressions)"))
    report.skip(
        "blocklisted",
        run(f"DELETE FROM {final} WHERE email IN (SELECT email FROM subscribers WHERE status = 'blocklisted')"),
    )
    report.skip(
        "unsubscribed",
        run(
            f"DELETE FROM {final} WHERE email IN (SELECT s.email FROM subscribers s JOIN subscriptions x "
            "ON x.subscriber_id = s.id WHERE x.list_id = :list AND x.status = 'unsubscribed')",
            list=list_id,
        ),
    )


def _on_list(final: str) -> str:
    return (
        f"SELECT s.id FROM {final} AS f JOIN subscribers s ON s.email = f.email "
        "JOIN subscriptions x ON x.subscriber_id = s.id AND x.list_id = :list"
    )


def _on_list_emails(final: str) -> str:
    return (
        "SELECT s.email FROM subscribers s JOIN subscriptions x ON x.subscriber_id = s.id AND x.list_id = :list "
        f"WHERE s.email IN (SELECT email FROM {final})"
    )


def _update_existing(
    session: Session, final: str, list_id: int, report: ImportReport, *, confirmed: bool, postgres: bool
) -> None:
    now = utcnow()
    merge_json = (
        "subscribers.attributes || CAST(f.attributes AS jsonb)"
        if postgres
        else ("json_patch(subscribers.attributes, f.attributes)")
    )
    # Existing subscribers: a non-empty name replaces the stored one, attributes are merged in.
    _run(
        session,
        f"UPDATE subscribers SET name = CASE WHEN f.name <> '' THEN f.name ELSE subscribers.name END, "
        "language = CASE WHEN f.language <> '' THEN f.language ELSE subscribers.language END, "
        f"attributes = {merge_json}, updated_at = :now FROM {final} AS f "
        "WHERE subscribers.email = f.email AND (f.name <> '' OR f.attributes <> '{}' OR f.language <> '')",
        now=now,
    )
    on_list = _on_list(final)
    report.updated = session.scalar(text(f"SELECT count(*) FROM ({on_list}) AS existing"), {"list": list_id}) or 0
    if confirmed:
        _run(
            session,
            "UPDATE subscriptions SET status = 'confirmed', confirmed_at = :now, consent_at = :now, updated_at = :now "
            f"WHERE list_id = :list AND status = 'pending' AND subscriber_id IN ({on_list})",
            list=list_id,
            now=now,
        )


def _add_subscriptions(
    session: Session, final: str, list_id: int, report: ImportReport, *, confirmed: bool, postgres: bool
) -> None:
    now = utcnow()
    as_json = "CAST({} AS jsonb)" if postgres else "{}"
    ignore = ("", " ON CONFLICT DO NOTHING") if postgres else (" OR IGNORE", "")
    status = SubscriptionStatus.confirmed if confirmed else SubscriptionStatus.pending
    values = {
        "list": list_id,
        "status": status.value,
        "source": SubscriptionSource.import_.value,
        "consent": now if confirmed else None,
        "now": now,
    }
    columns = "subscriber_id, list_id, status, source, consent_at, confirmed_at, created_at, updated_at"
    subscription_values = ":list, :status, :source, :consent, :consent, :now, :now"

    def execute(sql: str) -> int:
        types = [bindparam(name, type_=UTCDateTime()) for name in ("now", "consent") if f":{name}" in sql]
        statement = text(sql).bindparams(*types)
        return session.execute(statement, values).rowcount or 0  # type: ignore[attr-defined]

    # Subscribers who existed before and are not on the list yet (run before new rows join the table).
    report.imported = execute(
        f"INSERT{ignore[0]} INTO subscriptions ({columns}) SELECT s.id, {subscription_values} FROM {final} AS f "
        "JOIN subscribers s ON s.email = f.email WHERE NOT EXISTS "
        f"(SELECT 1 FROM subscriptions x WHERE x.subscriber_id = s.id AND x.list_id = :list){ignore[1]}"
    )
    # Normalised addresses hold exactly one @; models.email_domain is the same rule in Python.
    domain = "split_part(f.email, '@', 2)" if postgres else "substr(f.email, instr(f.email, '@') + 1)"
    new_subscribers = (
        "INSERT{} INTO subscribers (email, email_hash, email_domain, name, attributes, language, status, created_at, "
        f"updated_at) SELECT f.email, f.email_hash, {domain}, f.name, {as_json.format('f.attributes')}, "
        "NULLIF(f.language, ''), 'active', :now, :now "
        f"FROM {final} AS f WHERE NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = f.email){{}}"
    )
    if postgres:
        # One statement: the new subscribers' ids flow straight into their subscriptions, no second join.
        report.imported += execute(
            f"WITH new AS ({new_subscribers.format('', ' ON CONFLICT DO NOTHING RETURNING id')}) "
            f"INSERT INTO subscriptions ({columns}) SELECT new.id, {subscription_values} FROM new"
        )
    else:
        created = execute(new_subscribers.format(" OR IGNORE", ""))
        if created:
            report.imported += execute(
                f"INSERT OR IGNORE INTO subscriptions ({columns}) SELECT s.id, {subscription_values} "
                f"FROM {final} AS f JOIN subscribers s ON s.email = f.email WHERE NOT EXISTS "
                "(SELECT 1 FROM subscriptions x WHERE x.subscriber_id = s.id AND x.list_id = :list)"
            )
    outbox.emit_imported(session, list_id, now, confirmed=confirmed)  # the webhooks of the rows just added


def _merge_duplicates(session: Session, staging: str, final: str) -> None:
    """Fold the rows of an address repeated in the file into one, in file order: a later non-empty name
    replaces an earlier one, attributes accumulate. Only repeated addresses are read back, so this stays
    cheap for the usual file with a few duplicates."""
    rows = session.execute(
        text(
            f"SELECT email, name, attributes, language FROM {staging} WHERE email IN "
            f"(SELECT email FROM {staging} GROUP BY email HAVING count(*) > 1) ORDER BY email, line"
        )
    )
    merged: list[dict[str, str]] = []
    current: dict[str, Any] | None = None
    for email, name, attributes, language in rows:
        if current is None or current["email"] != email:
            current = {"email": email, "name": "", "attributes": {}, "language": ""}
            merged.append(current)
        current["name"] = name or current["name"]
        current["language"] = language or current["language"]
        current["attributes"].update(json.loads(attributes))
    session.execute(
        text(f"UPDATE {final} SET name = :name, attributes = :attributes, language = :language WHERE email = :email"),
        [{**m, "attributes": json.dumps(m["attributes"])} for m in merged],
    )
