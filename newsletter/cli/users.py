"""`newsletter users`: API users and their tokens."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from newsletter import users
from newsletter.cli.console import AsJson, emit_json, fail, note, print_table, say, unit_of_work
from newsletter.models import Role

app = typer.Typer(no_args_is_help=True, help="API users and their tokens.")


@app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Unique; `users list` shows it.")],
    role: Annotated[Role, typer.Option(help="admin: everything; editor: digests, campaigns, stats.")],
    as_json: AsJson = False,
) -> None:
    """Create an API user; prints their token once (only its hash is stored)."""
    with unit_of_work() as session:
        issued = users.create_user(session, name, role)
    print_token(issued, as_json)


@app.command("list")
def users_list(as_json: AsJson = False) -> None:
    """Users with their active tokens, by prefix."""
    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {
                "name": u.name,
                "role": u.role.value,
                "created_at": u.created_at,
                "tokens": [
                    {"prefix": t.prefix, "created_at": t.created_at, "last_used_at": t.last_used_at}
                    for t in users.active_tokens(session, u)
                ],
            }
            for u in users.list_users(session)
        ]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("name", "role", "token prefix", "last used"),
        (
            (row["name"], row["role"], token["prefix"] if token else "(none)", last_used(token))
            for row in rows
            for token in row["tokens"] or [None]
        ),
    )


def last_used(token: dict[str, Any] | None) -> str:
    last = token and token["last_used_at"]
    return f"{last:%Y-%m-%d %H:%M}" if last else "never"


@app.command("revoke")
def users_revoke(
    prefix: Annotated[str | None, typer.Argument(help="Token prefix as `users list` shows it.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Revoke every token of this user.")] = None,
) -> None:
    """Revoke one token by its prefix, or all tokens of a user."""
    if (prefix is None) == (user is None):
        fail("give a token prefix or --user NAME")
    with unit_of_work() as session:
        count = users.revoke(session, prefix=prefix, name=user)
    say(f"revoked {count} token(s)")


@app.command("rotate")
def users_rotate(name: str, as_json: AsJson = False) -> None:
    """Issue a new token for a user and revoke their old ones."""
    with unit_of_work() as session:
        issued = users.rotate(session, name)
    print_token(issued, as_json)


def print_token(issued: users.IssuedToken, as_json: bool) -> None:
    if as_json:
        emit_json({"name": issued.user.name, "role": issued.user.role.value, "token": issued.token,
                   "prefix": issued.prefix})  # fmt: skip
        return
    sys.stdout.write(issued.token + "\n")
    note(f"API token for {issued.user.name} ({issued.user.role.value}); it is shown only this once.")
