"""The `newsletter` command: every admin and editor action, on the same domain functions as the API."""

from __future__ import annotations

import contextlib
from typing import NoReturn

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from newsletter import logs
from newsletter.cli import (
    audit,
    bounces,
    campaigns,
    db,
    demo,
    digests,
    lists,
    segments,
    sequences,
    serve,
    subscribers,
    suppressions,
    templates,
    users,
    webhooks,
)
from newsletter.cli.console import Failure, clean, err
from newsletter.config import get_settings
from newsletter.errors import NewsletterError

try:  # typer >= 0.25 raises the usage errors of its own copy of click, older versions those of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[assignment]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(db.app, name="db")
app.add_typer(lists.app, name="lists")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(digests.app, name="digests")
app.add_typer(campaigns.app, name="campaigns")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(bounces.app, name="bounces")
app.add_typer(users.app, name="users")
app.add_typer(templates.app, name="templates")
app.add_typer(sequences.app, name="sequences")
app.add_typer(webhooks.app, name="webhooks")
app.command("demo")(demo.demo)
app.add_typer(segments.app, name="segments")
app.command("serve")(serve.serve)
app.command("audit")(audit.audit_log)

# What stops a command with one line on stderr and exit status 1 rather than a traceback: a failure a user
# can act on. Every domain error (ConfigError too) subclasses NewsletterError, so a new one needs no entry.
EXPECTED = (Failure, NewsletterError, OperationalError, FileNotFoundError)


def describe(exc: Exception) -> str:
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"cannot use the database {hide_password(get_settings().database_url)}: {reason}"
    return str(exc)


def hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def stop(reason: str, status: int) -> NoReturn:
    err.print(f"error: {clean(reason)}", soft_wrap=True)
    raise SystemExit(status) from None


def main() -> None:
    with contextlib.suppress(NewsletterError):  # a bad setting is reported by the command that needs it
        logs.configure(get_settings())
    try:
        # Not standalone: errors come here to be mapped once, and typer.Exit comes back as the result.
        result = app(standalone_mode=False)
    except EXPECTED as exc:
        stop(describe(exc), 1)
    except ClickException as exc:
        message = " ".join(exc.format_message().split())  # one line; `--help` shows the usage
        if not message:  # `newsletter` alone: the usage was the answer
            raise SystemExit(exc.exit_code) from None
        stop(message, exc.exit_code)
    except typer.Abort:  # Ctrl-D at a prompt
        stop("aborted", 1)
    raise SystemExit(result if isinstance(result, int) else 0)
