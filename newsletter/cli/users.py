"""`newsletter users`: API users and their tokens."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from newsletter import audit, passwords, users
from newsletter.cli.console import AsJson, emit_json, fail, note, print_table, say, unit_of_work
from newsletter.models import Role

app = typer.Typer(no_args_is_help=True, help="Users: admin sign-in passwords and API tokens.")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
]


def read_password(name: str, from_stdin: bool) -> str:
    """The new password, from stdin or asked twice without echo; checked against the rules before asking
    a second time, so a bad one is refused at once."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        passwords.check_rules(password, user_name=name)
        return password
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password on: pipe it in with --password-stdin, or give --no-password")
    password = typer.prompt(f"Password for {name}", hide_input=True, err=True)
    passwords.check_rules(password, user_name=name)
    if typer.prompt("Same password again", hide_input=True, err=True) != password:
        fail("the two passwords differ: nothing was changed, run the command again")
    return password


@app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Unique; `users list` shows it.")],
    role: Annotated[Role, typer.Option(help="admin: everything; editor: digests, campaigns, stats.")],
    email: Annotated[str | None, typer.Option(help="Their address: the default recipient of test sends.")] = None,
    password_stdin: PasswordStdin = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="An API-only user: no admin sign-in (set one later).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Create a user with an admin password (asked twice) and prints their API token once."""
    if no_password and password_stdin:
        fail("choose one of --password-stdin and --no-password")
    password = None if no_password else read_password(name, password_stdin)
    with unit_of_work() as session:
        issued = users.create_user(session, name, role, email=email, password=password)
        audit.record(session, audit.Actor.cli(), "user.create", f"user:{name}", role=role.value, prefix=issued.prefix)
    print_token(issued, as_json)


@app.command("set-password")
def users_set_password(
    name: Annotated[str, typer.Argument(help="The user, as `users list` shows them.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a user's admin password (asked twice); signs out every browser they are signed in on."""
    with unit_of_work() as session:
        users.get_user(session, name)  # an unknown name fails before the password is asked for
    password = read_password(name, password_stdin)
    with unit_of_work() as session:
        ended = users.set_password(session, name, password)
        audit.record(session, audit.Actor.cli(), "user.password", f"user:{name}", sessions_ended=ended)
    say(f"password of {name} changed; {ended} signed-in session(s) ended")


@app.command("list")
def users_list(as_json: AsJson = False) -> None:
    """Users: whether they can sign in to the admin, and their active tokens by prefix."""
    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {
                "name": u.name,
                "role": u.role.value,
                "email": u.email,
                "signs_in": u.password_hash is not None,  # has an admin password
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
        ("name", "role", "admin sign-in", "token prefix", "last used"),
        (
            (
                row["name"],
                row["role"],
                "password" if row["signs_in"] else "API only",
                token["prefix"] if token else "(none)",
                last_used(token),
            )
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
        owner = user if user is not None else users.token_owner(session, prefix or "").name
        count = users.revoke(session, prefix=prefix, name=user)
        audit.record(session, audit.Actor.cli(), "token.revoke", f"user:{owner}", prefix=prefix, count=count)
    say(f"revoked {count} token(s)")


@app.command("rotate")
def users_rotate(name: str, as_json: AsJson = False) -> None:
    """Issue a new token for a user and revoke their old ones."""
    with unit_of_work() as session:
        issued = users.rotate(session, name)
        audit.record(session, audit.Actor.cli(), "token.create", f"user:{name}", prefix=issued.prefix, rotated=True)
    print_token(issued, as_json)


def print_token(issued: users.IssuedToken, as_json: bool) -> None:
    if as_json:
        emit_json({"name": issued.user.name, "role": issued.user.role.value, "token": issued.token,
                   "prefix": issued.prefix})  # fmt: skip
        return
    sys.stdout.write(issued.token + "\n")
    note(f"API token for {issued.user.name} ({issued.user.role.value}); it is shown only this once.")


@app.command("set-role")
def users_set_role(
    name: Annotated[str, typer.Argument(help="The user, as `users list` shows them.")],
    role: Annotated[Role, typer.Argument(help="admin: everything; editor: digests, campaigns, stats.")],
) -> None:
    """Make a user an admin or an editor (the last active admin stays one)."""
    with unit_of_work() as session:
        previous = users.set_role(session, name, role)
        audit.record(session, audit.Actor.cli(), "user.role", f"user:{name}", previous=previous.value, role=role.value)
    say(f"{name}: {previous.value} -> {role.value}")


@app.command("deactivate")
def users_deactivate(name: Annotated[str, typer.Argument(help="The user, as `users list` shows them.")]) -> None:
    """Stop a user from signing in or using their tokens; signs them out everywhere."""
    with unit_of_work() as session:
        ended = users.deactivate(session, name)
        audit.record(session, audit.Actor.cli(), "user.deactivate", f"user:{name}", sessions_ended=ended)
    say(f"{name} deactivated; {ended} signed-in session(s) ended, their tokens are refused")


@app.command("reactivate")
def users_reactivate(name: Annotated[str, typer.Argument(help="The user, as `users list` shows them.")]) -> None:
    """Let a deactivated user sign in and use their tokens again."""
    with unit_of_work() as session:
        users.reactivate(session, name)
        audit.record(session, audit.Actor.cli(), "user.reactivate", f"user:{name}")
    say(f"{name} reactivated")


tokens_app = typer.Typer(no_args_is_help=True, help="A user's API tokens: create (named), list, revoke.")
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Whose token.")],
    purpose: Annotated[str, typer.Option(help="What it is for: 'newsroom CMS'.")],
    as_json: AsJson = False,
) -> None:
    """Issue one more token for a user (their others keep working); printed once."""
    with unit_of_work() as session:
        issued = users.create_token(session, name, purpose)
        details = {"prefix": issued.prefix, "purpose": purpose.strip()}
        audit.record(session, audit.Actor.cli(), "token.create", f"user:{name}", **details)
    print_token(issued, as_json)


@tokens_app.command("list")
def tokens_list(name: Annotated[str, typer.Argument(help="Whose tokens.")], as_json: AsJson = False) -> None:
    """A user's active tokens by prefix, with what they are for and when they were last used."""
    with unit_of_work() as session:
        rows = [
            {"prefix": t.prefix, "purpose": t.name, "created_at": t.created_at, "last_used_at": t.last_used_at}
            for t in users.active_tokens(session, users.get_user(session, name))
        ]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("prefix", "for", "created", "last used"),
        ((row["prefix"], row["purpose"] or "", f"{row['created_at']:%Y-%m-%d}", last_used(row)) for row in rows),
    )


@tokens_app.command("revoke")
def tokens_revoke(prefix: Annotated[str, typer.Argument(help="Token prefix as `users tokens list` shows it.")]) -> None:
    """Revoke one token by its prefix."""
    users_revoke(prefix=prefix, user=None)
