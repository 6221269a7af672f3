"""`newsletter sequences`: a list's welcome and follow-up emails — create, steps, on/off, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from newsletter import sequences
from newsletter.cli.console import AsJson, emit_json, fail, note, print_table, say, settings, unit_of_work
from newsletter.db import MAX_ID
from newsletter.models import EmailSequence

app = typer.Typer(no_args_is_help=True, help="Welcome and follow-up emails of a list, sent as subscribers confirm.")
steps = typer.Typer(no_args_is_help=True, help="The steps of a list's sequence.")
app.add_typer(steps, name="steps")

Slug = Annotated[str, typer.Argument(help="The list's slug.")]
Position = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The step's number, 1 for the first.")]
Subject = Annotated[str | None, typer.Option("--subject", help="The email's subject.")]
BodyFile = Annotated[
    Path | None, typer.Option("--body", help="A Markdown file with the email's text ('-' reads standard input).")
]
Delay = Annotated[
    str | None,
    typer.Option("--delay", help="After the previous step (the first: after confirming): 0, 3d, 12h, 2d12h."),
]
TemplateName = Annotated[
    str | None, typer.Option("--template", help="An uploaded MJML template (`newsletter templates add`).")
]

_WHEN_ON = (
    "from now on, each subscriber who confirms gets the steps in order; those confirmed before, and imported "
    "subscribers, get none of them"
)


def _read_body(path: Path) -> str:
    try:
        return typer.get_text_stream("stdin").read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read the body: {exc}")


def _summary(sequence: EmailSequence) -> dict[str, Any]:
    return {
        "list": sequence.mailing_list.slug,
        "enabled": sequence.enabled,
        "enabled_at": sequence.enabled_at.isoformat() if sequence.enabled_at else None,
        "steps": [
            {"position": s.position, "delay_hours": s.delay_hours, "subject": s.subject, "campaign_id": s.campaign_id}
            for s in sequence.steps
        ],
    }


@app.command("create")
def sequences_create(slug: Slug) -> None:
    """Create a list's sequence (off, without steps)."""
    with unit_of_work() as session:
        sequences.create_sequence(session, slug)
    say(f"created the sequence of list {slug}; add steps with `newsletter sequences steps add {slug}`")


@app.command("list")
def sequences_list(as_json: AsJson = False) -> None:
    """Every list's sequence: on or off, how many steps."""
    with unit_of_work() as session:
        rows = [_summary(s) for s in sequences.all_sequences(session)]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("list", "state", "steps", "on since"),
        ((r["list"], "on" if r["enabled"] else "off", len(r["steps"]), r["enabled_at"] or "") for r in rows),
    )


@app.command("show")
def sequences_show(slug: Slug, as_json: AsJson = False) -> None:
    """A sequence's steps, in order, with their delays."""
    with unit_of_work() as session:
        summary = _summary(sequences.get_sequence(session, slug))
    if as_json:
        emit_json(summary)
        return
    say(f"sequence of {slug}: {'on since ' + summary['enabled_at'] if summary['enabled'] else 'off'}")
    print_table(
        ("step", "after", "subject"),
        ((s["position"], _delay(s["delay_hours"]), s["subject"]) for s in summary["steps"]),
    )


def _delay(hours: int) -> str:
    days, rest = divmod(hours, 24)
    return (
        "at once" if not hours else " ".join(p for p in (f"{days}d" if days else "", f"{rest}h" if rest else "") if p)
    )


@app.command("status")
def sequences_status(slug: Slug, as_json: AsJson = False) -> None:
    """Each step's messages per status: sent, waiting, failed, skipped (left the list or turned off)."""
    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {
                "position": s.position,
                "subject": s.subject,
                "campaign_id": s.campaign_id,
                # sending: live; paused: the sequence is off, or the pipeline paused it (`campaigns resume ID`)
                "state": s.campaign_status,
                "counts": s.counts,
            }
            for s in sequences.status(session, slug)
        ]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("step", "subject", "state", "sent", "waiting", "failed", "unknown", "skipped"),
        (
            (
                r["position"],
                r["subject"],
                r["state"],
                r["counts"]["sent"],
                r["counts"]["pending"] + r["counts"]["sending"],
                r["counts"]["failed"],
                r["counts"]["unknown"],
                r["counts"]["skipped"],
            )
            for r in rows
        ),
    )


@app.command("enable")
def sequences_enable(slug: Slug) -> None:
    """Turn the sequence on (it is not sent retroactively to the list)."""
    with unit_of_work() as session:
        sequences.enable(session, slug)
    say(f"sequence of {slug} is on: {_WHEN_ON}")


@app.command("disable")
def sequences_disable(slug: Slug) -> None:
    """Turn the sequence off: nothing more is sent, messages not sent yet are skipped."""
    with unit_of_work() as session:
        sequences.disable(session, slug)
    say(f"sequence of {slug} is off: no further step is sent; turned on again, it starts with new subscribers")


@steps.command("add")
def steps_add(
    slug: Slug,
    subject: Annotated[str, typer.Option("--subject", help="The email's subject.")],
    body: Annotated[Path, typer.Option("--body", help="A Markdown file with the email's text ('-': stdin).")],
    delay: Delay = None,
    template: TemplateName = None,
) -> None:
    """Append a step."""
    text = _read_body(body)
    with unit_of_work() as session:
        hours = sequences.parse_delay(delay or "0")
        step = sequences.add_step(
            session, settings(), slug, subject=subject, body=text, delay_hours=hours, template=template
        )
        position = step.position
    say(f"added step {position} to the sequence of {slug}")


@steps.command("edit")
def steps_edit(
    slug: Slug,
    position: Position,
    subject: Subject = None,
    body: BodyFile = None,
    delay: Delay = None,
    template: TemplateName = None,
    default_template: Annotated[
        bool, typer.Option("--default-template", help="Go back to the bundled template.")
    ] = False,
) -> None:
    """Change a step. Subscribers who got it already are not sent it again."""
    if subject is None and body is None and delay is None and template is None and not default_template:
        fail("nothing to change: give --subject, --body, --delay, --template or --default-template")
    text = _read_body(body) if body is not None else None
    with unit_of_work() as session:
        hours = sequences.parse_delay(delay) if delay is not None else None
        sequences.edit_step(
            session,
            settings(),
            slug,
            position,
            subject=subject,
            body=text,
            delay_hours=hours,
            template=template,
            default_template=default_template,
        )
    say(f"changed step {position} of {slug}")
    note("those who received it already keep the version they got; it is not sent again")


@steps.command("remove")
def steps_remove(slug: Slug, position: Position) -> None:
    """Remove a step: its messages not sent yet are skipped; the later steps move up."""
    with unit_of_work() as session:
        sequences.remove_step(session, slug, position)
    say(f"removed step {position} of {slug}")


@steps.command("move")
def steps_move(
    slug: Slug, position: Position, to: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Its new number.")]
) -> None:
    """Move a step to another place in the order."""
    with unit_of_work() as session:
        sequences.move_step(session, slug, position, to)
    say(f"moved step {position} of {slug} to {to}")
