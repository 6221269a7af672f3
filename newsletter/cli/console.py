"""What every command shares: the two consoles, literal printing of stored values, --json, the unit of work, failing.

Everything a command prints for people comes from users, the database or other mail servers (names, subjects,
SMTP replies, bounce reports). So the consoles interpret no Rich markup and no emoji codes, and `clean()`
drops control characters: a subscriber named `[link=…]` or holding an ESC sequence prints as the text it is
and cannot restyle, hyperlink or retitle the admin's terminal. Styling is opt-in, on values we wrote.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from newsletter.config import Settings, get_settings
from newsletter.db import MAX_ID, session_scope

out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

# Unicode category Cc: C0 (with ESC, CR, LF, TAB), DEL and C1 (with the 8-bit CSI, OSC and ST).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Failure(Exception):
    """A one-line reason to stop with a non-zero exit status."""


def fail(message: str) -> NoReturn:
    raise Failure(message)


def clean(value: object) -> str:
    """`value` as text that is safe on a terminal: every control character removed."""
    return _CONTROL.sub("", str(value))


def say(message: str) -> None:
    """One line for people on stdout, printed literally."""
    out.print(clean(message))


def note(message: str, *, soft_wrap: bool = False) -> None:
    """One line for people on stderr (what was written where, warnings), printed literally."""
    err.print(clean(message), soft_wrap=soft_wrap)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A table whose cells are shown as the text they are (a Table renders plain strings as markup)."""
    table = Table(*columns)
    for row in rows:
        table.add_row(*(Text(clean(cell)) for cell in row))
    out.print(table)


AsJson = Annotated[bool, typer.Option("--json")]  # a command's `--json`: print for scripts with emit_json()


def id_argument(help: str) -> Any:
    """A row id argument: beyond what a database id can be it is a usage error (exit 2) naming the range,
    not a driver's overflow traceback."""
    return typer.Argument(min=1, max=MAX_ID, help=help)


def id_option(help: str) -> Any:
    """An id option that pages (`--before ID`, `--after ID`), bounded like id_argument."""
    return typer.Option(min=0, max=MAX_ID, help=help)


def say_next_page(cursor: int | None) -> None:
    """How to ask for the next page of a paged listing, if there is one."""
    if cursor is not None:
        say(f"next page: --after {cursor}")


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


_C1 = re.compile("[\x7f-\x9f]")


def readable_json(value: Any) -> str:
    """Indented JSON that keeps letters as they are but escapes DEL and C1 controls (CSI is one), which
    `json` leaves raw without `ensure_ascii` and a terminal would obey."""
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return _C1.sub(lambda match: f"\\u{ord(match.group()):04x}", text) + "\n"


def settings() -> Settings:
    return get_settings()


@contextmanager
def unit_of_work() -> Iterator[Session]:
    with session_scope(settings()) as session:
        yield session
