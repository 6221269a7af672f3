"""Editor-supplied digest templates: validated by a sandboxed test render of the sample digest before storing."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import digests, links, rendering
from newsletter.errors import Invalid, NotFound
from newsletter.lists import get_list
from newsletter.models import MailingList, Template

__all__ = [
    "MAX_SOURCE_CHARS",
    "InvalidTemplate",
    "TemplateNotFound",
    "default_for",
    "get_template",
    "list_templates",
    "save_template",
    "template_source",
]

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_SOURCE_CHARS = 100_000
SAMPLE_DIGEST = Path(__file__).resolve().parent / "samples" / "sample-digest.md"
# A theme with every optional field set, so the test render exercises the logo and address branches too.
SAMPLE_BASE_URL = "https://news.example.org"
SAMPLE_THEME = rendering.Theme(
    publication_name="Sample Publication",
    logo_url="https://news.example.org/logo.png",
    postal_address="Sample Publishing, 1 Example Street, Astana",
)


class InvalidTemplate(Invalid):
    """A template that cannot be stored; the message gives the line and the reason."""


class TemplateNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no template named {name!r}; see `newsletter templates list`")


@cache
def _sample_digest() -> digests.Digest:
    return digests.load_digest(SAMPLE_DIGEST)


def validate_template(source: str, *, name: str = "template") -> rendering.RenderedEmail:
    """Test-render `source` against the sample digest exactly as a campaign would, or raise InvalidTemplate."""
    if not source.strip():
        raise InvalidTemplate(f"{name}: the template is empty")
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidTemplate(f"{name}: the template is {len(source)} characters; at most {MAX_SOURCE_CHARS}")
    try:
        rendered = rendering.render_digest(
            _sample_digest(),
            theme=SAMPLE_THEME,
            list_name="Sample list",
            list_description="A sample list",
            link_href=lambda url: links.click_url(SAMPLE_BASE_URL, rendering.TRACK, 1),
            open_pixel_url=links.open_url(SAMPLE_BASE_URL, rendering.TRACK),
            template_source=source,
        )
    except rendering.TemplateRejected as exc:
        # A name the digest lacks may be a template for sequence steps (templates/email/sequence/); any other
        # refusal (syntax, limits) would be the same again.
        step = _as_sequence_step(source) if exc.reason.startswith("undefined:") else None
        if step is None:
            raise InvalidTemplate(f"{name}: {exc}") from None
        rendered = step
    # Every message must carry a working unsubscribe link: a template without one could never be sent.
    if f'href="{rendering.UNSUBSCRIBE_URL}"' not in rendered.html:
        raise InvalidTemplate(
            f'{name}: the template must link to the unsubscribe page: <a href="{{{{ unsubscribe_url }}}}">'
        )
    return rendered


def _as_sequence_step(source: str) -> rendering.RenderedEmail | None:
    """The template test-rendered as a sequence step (subject, body_html, ...), None when that fails too."""
    look = rendering.ListLook(SAMPLE_THEME, "Sample list", "A sample list", tracking=True)
    try:
        return rendering.render_step(
            "Welcome",
            "Glad you are here. [Start here](https://example.org/start).",
            look,
            base_url=SAMPLE_BASE_URL,
            template_source=source,
        )
    except rendering.TemplateRejected:
        return None


def save_template(session: Session, name: str, source: str) -> Template:
    """Store a template under `name` (replacing an older version) after a successful sandboxed test render.

    Replacing is safe for campaigns already sent or sending: a campaign keeps the HTML it rendered at start.
    """
    if not NAME.match(name):
        raise InvalidTemplate(f"template name {name!r}: use lowercase letters, digits, '-' and '_' (at most 100)")
    validate_template(source, name=f"template {name!r}")
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        template = Template(name=name, source=source)
        session.add(template)
    else:
        template.source = source
    session.flush()
    return template


def get_template(session: Session, name: str) -> Template:
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        raise TemplateNotFound(name)
    return template


def list_templates(session: Session) -> list[Template]:
    return list(session.scalars(select(Template).order_by(Template.name)))


def template_source(session: Session, template_id: int | None) -> str | None:
    """The source of a campaign's template, or None for the bundled one."""
    if template_id is None:
        return None
    return session.scalar(select(Template.source).where(Template.id == template_id))


def default_for(session: Session, lists: Sequence[MailingList]) -> Template | None:
    """The template a campaign to `lists` uses when none is named: the first list's default, if it has one."""
    first = lists[0] if lists else None
    if first is None or first.default_template_id is None:
        return None
    return session.get(Template, first.default_template_id)


def set_list_default(session: Session, list_slug: str, name: str | None) -> MailingList:
    """Make template `name` (None: the bundled one) the default of the list `list_slug`."""
    mailing_list = get_list(session, list_slug)
    mailing_list.default_template_id = get_template(session, name).id if name else None
    session.flush()
    return mailing_list


def default_name(session: Session, mailing_list: MailingList) -> str | None:
    """The name of the list's default template, or None for the bundled one."""
    if mailing_list.default_template_id is None:
        return None
    return session.scalar(select(Template.name).where(Template.id == mailing_list.default_template_id))


def lists_using(session: Session, template: Template) -> list[str]:
    """The slugs of the lists whose default `template` is."""
    return list(session.scalars(select(MailingList.slug).where(MailingList.default_template_id == template.id)))
