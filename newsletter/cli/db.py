"""`newsletter db`: the database schema."""

from __future__ import annotations

import typer

from newsletter.cli.console import say, settings
from newsletter.db import get_engine
from newsletter.migrate import current_revision, upgrade

app = typer.Typer(no_args_is_help=True, help="Database schema.")


@app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create the schema or bring it up to date."""
    engine = get_engine(settings())
    upgrade(engine, revision)
    say(f"database at revision {current_revision(engine)}")
