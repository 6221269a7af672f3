"""`newsletter digests`: store a draft, edit or duplicate it, preview it as sent, check it before sending."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from newsletter import deliverability, digests, previews
from newsletter.cli.console import AsJson, clean, emit_json, fail, note, out, settings, unit_of_work

app = typer.Typer(no_args_is_help=True, help="Digests: publish, update, duplicate, preview, check.")

# also the options of `campaigns send` and `campaigns test`, which render a digest the same way
DigestSlug = Annotated[str, typer.Argument(help="Slug of a stored digest.")]
TemplateName = Annotated[str | None, typer.Option(help="An uploaded template instead of the bundled one.")]


@app.command("publish")
def digests_publish(file: Path, as_json: AsJson = False) -> None:
    """Validate and store a digest draft (.md with front matter, .yaml or .json); prints its slug."""
    digest = digests.load_digest(file)
    with unit_of_work() as session:
        stored, created = digests.publish(session, digest)
        slug = stored.slug
    if as_json:
        emit_json({"slug": slug, "created": created})
    else:
        sys.stdout.write(slug + "\n")


@app.command("update")
def digests_update(slug: DigestSlug, file: Path, as_json: AsJson = False) -> None:
    """Replace a draft's content with a file's; refused once a campaign uses the digest (duplicate it)."""
    digest = digests.load_digest(file)
    with unit_of_work() as session:
        stored = digests.update(session, slug, digest)
        items = len(stored.items)
    if as_json:
        emit_json({"slug": slug, "items": items})
    else:
        note(f"updated {slug} ({items} item{'s' if items != 1 else ''})")


@app.command("duplicate")
def digests_duplicate(
    slug: DigestSlug,
    new_slug: Annotated[str | None, typer.Option("--slug", help="The copy's slug (default: SLUG-copy).")] = None,
    as_json: AsJson = False,
) -> None:
    """Copy a digest (frozen or not) into a new editable draft; prints the copy's slug."""
    with unit_of_work() as session:
        copy = digests.duplicate(session, slug, new_slug).slug
    if as_json:
        emit_json({"slug": copy, "from": slug})
    else:
        sys.stdout.write(copy + "\n")


def write_output(content: str | bytes, output: Path | None) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        note(f"wrote {output} ({len(data) / 1024:.1f} KB)")


@app.command("preview")
def digests_preview(
    slug: DigestSlug,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    text: Annotated[bool, typer.Option("--text", help="The text part instead of the HTML.")] = False,
    eml: Annotated[bool, typer.Option("--eml", help="The complete message (.eml) instead of the HTML.")] = False,
    list_slug: Annotated[str | None, typer.Option("--list", help="Render for this list (default: the oldest).")] = None,
    template: TemplateName = None,
) -> None:
    """The email exactly as a subscriber of the list gets it, for a sample recipient."""
    if text and eml:
        fail("choose one of --text and --eml")
    with unit_of_work() as session:
        preview = previews.preview_digest(session, settings(), slug, list_slug, template=template)
    write_output(preview.message if eml else preview.text if text else preview.html, output)


STYLES = {"error": "bold red", "warning": "yellow", "info": "dim"}


@app.command("check")
def digests_check(
    slug: DigestSlug,
    list_slug: Annotated[str | None, typer.Option("--list", help="Check for this list (default: the oldest).")] = None,
    template: TemplateName = None,
    spamassassin: Annotated[bool, typer.Option(help="Score with a local SpamAssassin when installed.")] = True,
    as_json: AsJson = False,
) -> None:
    """Pre-send deliverability check; exits non-zero when something must be fixed before sending."""
    with unit_of_work() as session:
        findings = deliverability.check(
            session, settings(), slug, list_slug, template=template, spamassassin=spamassassin
        )
    problems = deliverability.errors(findings)
    if as_json:
        emit_json({"ok": not problems, "findings": [finding.as_dict() for finding in findings]})
    else:
        for finding in findings:
            # headlines and messages quote the editor's digest: styled level, literal rest
            where = f"item {finding.item} ({finding.headline}): " if finding.item else ""
            out.print(
                Text.assemble((f"{finding.level:>7}", STYLES[finding.level]), " ", clean(where + finding.message))
            )
    if problems:
        fail(f"{len(problems)} problem(s) must be fixed before digest {slug!r} can be sent")
