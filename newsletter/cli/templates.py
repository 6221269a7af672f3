"""`newsletter templates`: upload and list custom digest templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter import audit, templates
from newsletter.cli.console import AsJson, emit_json, fail, print_table, say, unit_of_work

app = typer.Typer(no_args_is_help=True, help="Custom digest templates (MJML, rendered in a sandbox).")


@app.command("add")
def templates_add(
    name: Annotated[str, typer.Argument(help="Lowercase name, e.g. 'weekly-dark'.")],
    file: Annotated[Path, typer.Argument(help="MJML body template; start from templates/email/digest/body.mjml.")],
) -> None:
    """Upload a digest template (replacing one of the same name) after a test render of the sample digest."""
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot read the template: {exc}")
    with unit_of_work() as session:
        try:
            template = templates.save_template(session, name, source)
        except templates.InvalidTemplate as exc:
            fail(f"{file}: {exc}")  # the render error names a line; say of which file
        result = template.name
        audit.record(session, audit.Actor.cli(), "template.save", f"template:{result}", characters=len(source))
    say(f"saved template {result}")


@app.command("list")
def templates_list(as_json: AsJson = False) -> None:
    """Uploaded templates."""
    with unit_of_work() as session:
        rows: list[dict[str, str]] = [
            {"name": t.name, "characters": str(len(t.source)), "updated_at": t.updated_at.isoformat()}
            for t in templates.list_templates(session)
        ]
    if as_json:
        emit_json(rows)
        return
    print_table(("name", "characters", "updated"), ((r["name"], r["characters"], r["updated_at"]) for r in rows))


@app.command("default")
def templates_default(
    list_slug: Annotated[str, typer.Argument(metavar="LIST", help="The list, by slug.")],
    name: Annotated[str | None, typer.Argument(help="The template; leave out to go back to the bundled one.")] = None,
) -> None:
    """Choose the template a list's campaigns use unless `campaigns send --template` names another."""
    with unit_of_work() as session:
        mailing_list = templates.set_list_default(session, list_slug, name)
        target = f"list:{mailing_list.slug}"
        audit.record(session, audit.Actor.cli(), "list.update", target, default_template=name)
    say(f"{list_slug}: campaigns use {'template ' + name if name else 'the bundled template'}")
