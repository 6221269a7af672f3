"""`newsletter lists`: create, show, change and delete mailing lists."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import audit, lists
from newsletter.cli.console import AsJson, emit_json, fail, print_table, say, settings, unit_of_work
from newsletter.models import MailingList, OptIn, Visibility

app = typer.Typer(no_args_is_help=True, help="Mailing lists.")

THEME_HELP = 'JSON: {"publication_name", "logo_url", "accent_color", "postal_address"}.'


def parse_theme(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        theme = json.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"--theme is not JSON: {exc}")
    if not isinstance(theme, dict):
        fail('--theme must be a JSON object such as {"accent_color": "#1a5fb4"}')
    return theme


LANGUAGE_HELP = "Language of the list's pages and of emails whose digest has none: en, ru, kk."


@app.command("create")
def lists_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Shown to subscribers.")],
    from_email: Annotated[str, typer.Option(help="Sender address.")],
    from_name: Annotated[str, typer.Option(help="Sender display name (default: the list name).")] = "",
    single_opt_in: Annotated[bool, typer.Option(help="Confirm subscriptions without an email round-trip.")] = False,
    postal_address: Annotated[str, typer.Option(help="Postal address printed in every footer.")] = "",
    private: Annotated[bool, typer.Option("--private", help="Hide from the public archive and forms.")] = False,
    theme: Annotated[str | None, typer.Option(help=THEME_HELP)] = None,
    tracking: Annotated[
        bool | None, typer.Option("--tracking/--no-tracking", help="Open/click tracking (default: TRACK_DEFAULT).")
    ] = None,
    language: Annotated[str | None, typer.Option(help=LANGUAGE_HELP)] = None,
    as_json: AsJson = False,
) -> None:
    """Create a mailing list."""
    with unit_of_work() as session:
        mailing_list = lists.create_list(
            session,
            slug=slug,
            opt_in=OptIn.single if single_opt_in else OptIn.double,
            visibility=Visibility.private if private else Visibility.public,
            theme=parse_theme(theme),
            name=name,
            from_email=from_email,
            from_name=from_name,
            postal_address=postal_address,
            tracking=settings().track_default if tracking is None else tracking,
            language=language,
        )
        result = {"id": mailing_list.id, "slug": mailing_list.slug}
        audit.record(session, audit.Actor.cli(), "list.create", f"list:{slug}")
    emit_json(result) if as_json else say(f"created list {slug}")


@app.command("list")
def lists_list(as_json: AsJson = False) -> None:
    """Lists with their subscriber counts."""
    with unit_of_work() as session:
        rows = [
            {
                "slug": m.slug,
                "name": m.name,
                "opt_in": m.opt_in.value,
                "tracking": m.tracking,
                **lists.subscription_counts(session, m.id),
            }
            for m in session.scalars(select(MailingList).order_by(MailingList.slug))
        ]
    if as_json:
        emit_json(rows)
        return
    keys = ("slug", "name", "opt_in", "confirmed", "pending", "unsubscribed")
    print_table(
        ("slug", "name", "opt-in", "confirmed", "pending", "unsubscribed"), ([row[k] for k in keys] for row in rows)
    )


SUMMARY_FIELDS = ("id", "slug", "name", "description", "from_email", "from_name", "reply_to", "opt_in", "visibility",
                  "postal_address", "tracking", "theme", "cors_origins", "form_fields", "language", "verp",
                  "verp_address")  # fmt: skip


def list_summary(session: Session, mailing_list: MailingList) -> dict[str, Any]:
    summary = {field: getattr(mailing_list, field) for field in SUMMARY_FIELDS}
    summary.update(opt_in=mailing_list.opt_in.value, visibility=mailing_list.visibility.value)
    return {**summary, "counts": lists.subscription_counts(session, mailing_list.id)}


@app.command("show")
def lists_show(slug: str, as_json: AsJson = False) -> None:
    """One list: its settings and subscription counts."""
    with unit_of_work() as session:
        result = list_summary(session, lists.get_list(session, slug))
    if as_json:
        emit_json(result)
        return
    for key, value in result.items():
        say(f"{key:>16}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")


# long: one typer option per field of a list; the body only gathers the given ones
@app.command("update")
def lists_update(
    slug: str,
    name: Annotated[str | None, typer.Option()] = None,
    from_email: Annotated[str | None, typer.Option()] = None,
    from_name: Annotated[str | None, typer.Option()] = None,
    reply_to: Annotated[str | None, typer.Option(help="Empty string clears it.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    postal_address: Annotated[str | None, typer.Option()] = None,
    opt_in: Annotated[OptIn | None, typer.Option()] = None,
    visibility: Annotated[Visibility | None, typer.Option()] = None,
    tracking: Annotated[bool | None, typer.Option("--tracking/--no-tracking")] = None,
    theme: Annotated[str | None, typer.Option(help=THEME_HELP + " Replaces the theme.")] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A site that may post the subscribe form (https://example.org, or *); repeat it. "
            "Replaces the origins; --cors-origin '' clears them."
        ),
    ] = None,
    form_field: Annotated[
        list[str] | None,
        typer.Option(
            help="An extra field of the subscribe form, NAME[:LABEL[:required]]; repeat it. "
            "Replaces the fields; --form-field '' clears them."
        ),
    ] = None,
    language: Annotated[str | None, typer.Option(help=LANGUAGE_HELP + " Empty string clears it.")] = None,
    verp: Annotated[
        bool | None,
        typer.Option("--verp/--no-verp", help="A return path of its own for each message (VERP), or the plain one."),
    ] = None,
    verp_address: Annotated[
        str | None,
        typer.Option(help="VERP from this address (bounces@domain: bounces+TOKEN@domain); '' uses VERP_ADDRESS's."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Change some fields of a list."""
    changes: dict[str, Any] = {
        "name": name,
        "from_email": from_email,
        "from_name": from_name,
        "description": description,
        "postal_address": postal_address,
        "opt_in": opt_in,
        "visibility": visibility,
        "tracking": tracking,
        "theme": parse_theme(theme),
        "language": language,
        "verp": verp,
    }
    if verp_address is not None:
        changes["verp_address"] = verp_address
    if reply_to is not None:
        changes["reply_to"] = reply_to or None
    if cors_origin is not None:
        changes["cors_origins"] = [origin for origin in cors_origin if origin.strip()]
    if form_field is not None:
        changes["form_fields"] = [lists.parse_form_field(spec) for spec in form_field if spec.strip()]
    with unit_of_work() as session:
        result = list_summary(session, lists.update_list(session, slug, **changes))
        fields = sorted(k for k, v in changes.items() if v is not None or k == "reply_to")
        audit.record(session, audit.Actor.cli(), "list.update", f"list:{slug}", fields=fields)
    emit_json(result) if as_json else say(f"updated list {slug}")


@app.command("delete")
def lists_delete(slug: str) -> None:
    """Delete a list, its subscriptions and its welcome sequence (refused once campaigns went to it)."""
    with unit_of_work() as session:
        removed = lists.delete_list(session, slug)
        audit.record(
            session, audit.Actor.cli(), "list.delete", f"list:{slug}",
            subscriptions=removed.subscriptions, sequence_steps=removed.sequence_steps,
        )  # fmt: skip
    subscriptions = sum(removed.subscriptions.values())
    sequence = ""
    if removed.sequence_steps:
        sequence = (
            f" and its welcome sequence ({removed.sequence_steps} step(s), "
            f"the record of {removed.sequence_messages} welcome email(s))"
        )
    say(f"deleted list {slug}: {subscriptions} subscription(s){sequence}")
