"""`newsletter segments`: saved filters over subscribers — create, list, show (and count), update, delete, export."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from newsletter import segments
from newsletter.cli.console import AsJson, emit_json, fail, note, print_table, readable_json, say, unit_of_work
from newsletter.models import Segment

app = typer.Typer(no_args_is_help=True, help="Segments: saved filters (JSON, never SQL) to send to or export.")

FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        help='The filter as JSON, e.g. \'{"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}\', '
        "or @FILE to read it from a file.",
    ),
]
Description = Annotated[str | None, typer.Option(help="What the segment is for.")]


def read_filter(value: str) -> str:
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        size = path.stat().st_size
        if size > segments.filters.MAX_FILTER_CHARS * 4:
            fail(f"--filter {value}: the file is larger than a filter can be")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--filter {value}: cannot read it ({exc.__class__.__name__}: {exc})")


def summary(segment: Segment, count: int | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "name": segment.name,
        "description": segment.description,
        "filter": segment.filter,
        "created_by": segment.created_by,
        "updated_by": segment.updated_by,
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    }
    if count is not None:
        shown["count"] = count
    return shown


@app.command("create")
def segments_create(
    name: str, filter_: FilterOption = None, description: Description = None, as_json: AsJson = False
) -> None:
    """Save a filter under a name (checked first: nothing is stored if any part is wrong)."""
    if filter_ is None:
        fail("--filter is required: the filter as JSON or @FILE")
    with unit_of_work() as session:
        segment = segments.create(session, name, read_filter(filter_), description=description or "")
        shown = summary(segment)
    if as_json:
        emit_json(shown)
    else:
        say(f"segment {shown['name']!r} saved")


@app.command("list")
def segments_list(as_json: AsJson = False) -> None:
    """All segments by name (`show NAME --count` counts one)."""
    with unit_of_work() as session:
        rows = [summary(s) for s in segments.list_segments(session)]
    if as_json:
        emit_json(rows)
        return
    print_table(("name", "description", "updated"), ((r["name"], r["description"], r["updated_at"]) for r in rows))


@app.command("show")
def segments_show(
    name: str,
    count: Annotated[bool, typer.Option("--count", help="Also count its members now.")] = False,
    as_json: AsJson = False,
) -> None:
    """One segment's filter, and with --count how many subscribers it matches."""
    with unit_of_work() as session:
        segment = segments.get_segment(session, name)
        shown = summary(segment, segments.count(session, segment.filter) if count else None)
    if as_json:
        emit_json(shown)
        return
    say(f"{shown['name']}: {shown['description']}" if shown["description"] else shown["name"])
    sys.stdout.write(readable_json(shown["filter"]))
    if count:
        say(f"{shown['count']} subscriber(s) match")


@app.command("update")
def segments_update(
    name: str,
    filter_: FilterOption = None,
    description: Description = None,
    rename: Annotated[str | None, typer.Option(help="A new name.")] = None,
) -> None:
    """Change a segment's filter, description or name (campaigns already created keep theirs)."""
    if filter_ is None and description is None and rename is None:
        fail("nothing to change: give --filter, --description or --rename")
    with unit_of_work() as session:
        segment = segments.update(
            session,
            name,
            new_name=rename,
            raw_filter=read_filter(filter_) if filter_ is not None else None,
            description=description,
        )
        final = segment.name
    say(f"segment {final!r} updated")


@app.command("delete")
def segments_delete(name: str) -> None:
    """Delete a segment; campaigns sent to it keep the filter they were sent with."""
    with unit_of_work() as session:
        segments.delete(session, name)
    say(f"segment {name!r} deleted")


@app.command("export")
def segments_export(
    name: str,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
) -> None:
    """The segment's members as CSV (email, name, attributes; spreadsheet-safe)."""
    with unit_of_work() as session:
        lines = segments.export_csv(session, name)
        if output is None:
            for line in lines:
                sys.stdout.write(line)
            return
        tmp = output.with_name(output.name + ".part")
        with tmp.open("w", encoding="utf-8", newline="") as target:
            for line in lines:
                target.write(line)
        tmp.replace(output)
    note(f"wrote {output}")
