"""Editor templates: the sandbox keeps them away from Python internals, endless loops and huge output."""

from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, sandbox, templates
from newsletter.config import Settings
from newsletter.delivery import sending
from newsletter.mailer import MemoryMailer
from newsletter.models import Campaign, Template
from newsletter.rendering import TEMPLATES_DIR
from tests.factories import make_list, make_subscribers, publish_sample

BUNDLED = (TEMPLATES_DIR / "email" / "digest" / "body.mjml").read_text(encoding="utf-8")
FOOTER = '<a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}'


def mjml(body: str) -> str:
    """A minimal valid MJML template with the required unsubscribe link around `body`."""
    return (
        f"<mjml><mj-body><mj-section><mj-column><mj-text>\n{body}\n{FOOTER}\n"
        "</mj-text></mj-column></mj-section></mj-body></mjml>\n"
    )


def stored(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Template)) or 0


def test_a_copy_of_the_bundled_template_is_accepted_and_renders_the_same(session: Session) -> None:
    template = templates.save_template(session, "copy", BUNDLED)
    assert template.id is not None
    assert templates.validate_template(BUNDLED).html == templates.validate_template(template.source).html
    assert [t.name for t in templates.list_templates(session)] == ["copy"]
    # saving again under the same name replaces the source
    templates.save_template(session, "copy", mjml("<p>{{ digest.title }}</p>"))
    assert stored(session) == 1
    assert "digest.title" in templates.get_template(session, "copy").source


# Each case: source, words the error must contain, the line it must name (None: no line applies).
REJECTED = {
    "syntax error": (mjml("{% for item in sections %}\n{{ item.name }\n{% endfor %}"), "syntax error", 3),
    "unclosed block": ("<mjml>\n{% if greeting %}\n</mjml>", "syntax error", 3),
    "__mro__": (mjml("{{ ''.__class__.__mro__ }}"), "not allowed in a template: access to attribute '__class__'", 2),
    "__globals__": (mjml("{{ lipsum.__globals__ }}"), "access to attribute '__globals__'", 2),
    "cycler globals": (
        mjml("\n{{ cycler.__init__.__globals__.os }}"),
        "not allowed in a template: access to attribute '__init__'",
        3,
    ),
    "mutation": (mjml("{% set x = [] %}{{ x.append(1) }}"), "not allowed in a template", 2),
    "undefined variable": (mjml("{{ subscriber.password }}"), "'subscriber' is undefined", 2),
    "range too big": (mjml("{% for i in range(10**9) %}{% endfor %}"), "MAX_RANGE", 2),
    "runaway recursion": (mjml("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "recursion too deep", None),
    "memory bomb": (mjml("{{ 'x' * 10**10 }}"), "memory", None),
    "huge output": (
        mjml("{% for i in range(100000) %}{% for j in range(1000) %}0123456789{% endfor %}{% endfor %}"),
        "output is larger than 256 KB",
        None,
    ),
    "no unsubscribe link": ("<mjml><mj-body><mj-section><mj-column><mj-text>{{ list_name }}</mj-text>"
                            "</mj-column></mj-section></mj-body></mjml>", "must link to the unsubscribe page", None),
    "invalid mjml": ("<mjml><mj-body>" + FOOTER, "does not produce valid MJML", None),
    "empty": ("  \n", "the template is empty", None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REJECTED))
def test_bad_templates_are_rejected_with_line_and_reason_and_nothing_is_stored(session: Session, case: str) -> None:
    source, reason, line = REJECTED[case]
    with pytest.raises(templates.InvalidTemplate) as caught:
        templates.save_template(session, "bad", source)
    message = str(caught.value)
    assert message.startswith("template 'bad': ")
    assert reason in message
    if line is not None:
        assert f": line {line}: " in message
    assert stored(session) == 0


@pytest.mark.serial
def test_an_endless_loop_is_stopped_within_the_cpu_limit(session: Session) -> None:
    # 10^10 iterations without output: nothing but the CPU limit can stop it.
    source = mjml("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    started = time.monotonic()
    with pytest.raises(templates.InvalidTemplate, match="more than 2 s of CPU"):
        templates.save_template(session, "loop", source)
    assert time.monotonic() - started < sandbox.CPU_SECONDS + 3
    assert stored(session) == 0


def test_sandbox_limits_are_parameters() -> None:
    with pytest.raises(sandbox.TemplateRejected, match="output is larger than 1 KB"):
        sandbox.render("{% for i in range(2000) %}x{% endfor %}", {}, max_output=1024)
    assert sandbox.render("{{ a }} {{ b_html }}", {"a": "<i>", "b_html": "<b>ok</b>"}) == "&lt;i&gt; <b>ok</b>"


def test_invalid_names_are_refused(session: Session) -> None:
    with pytest.raises(templates.InvalidTemplate, match="template name 'Bad Name'"):
        templates.save_template(session, "Bad Name", BUNDLED)
    with pytest.raises(templates.TemplateNotFound, match="no template named 'nope'"):
        templates.get_template(session, "nope")


def test_a_campaign_with_a_template_renders_and_sends_with_it(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 2)
    digest = publish_sample(session)
    template = templates.save_template(
        session,
        "plain",
        mjml("<h1>Custom: {{ digest.title }}</h1>{% for s in sections %}<p>{{ s.name }}</p>{% endfor %}"),
    )
    with pytest.raises(templates.TemplateNotFound, match="no template named 'plainer'"):
        delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"], template="plainer")
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"], template="plain")
    assert campaign.template_id == template.id
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    assert campaign.html is not None and "Custom: Foreign media on Kazakhstan" in campaign.html
    mailer = MemoryMailer()
    for batch in ranges:
        sending.send_batch(sessions, settings, mailer, batch.campaign_id, batch.first_id, batch.last_id)
    assert len(mailer.sent) == 2
    for sent in mailer.sent:
        message = email.message_from_bytes(sent.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        html = message.get_body(preferencelist=("html",))
        assert html is not None and "Custom: Foreign media on Kazakhstan" in html.get_content()
