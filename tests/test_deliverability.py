"""The pre-send check: findings for each problem, with the item it concerns, and the gate at campaign creation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import deliverability, delivery, digests, templates
from newsletter.config import Settings
from newsletter.deliverability import Finding
from newsletter.models import Campaign
from tests.factories import make_list, publish_sample

DIGESTS = Path(__file__).parent / "digests"
SPAMASSASSIN = pytest.mark.skipif(shutil.which("spamassassin") is None, reason="needs spamassassin")


def levels(findings: list[Finding]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    for finding in findings:
        result[finding.level].append(finding.message)
    return result


def publish(session: Session, **changes: object) -> str:
    data = digests.load_digest(DIGESTS / "ten-items.yaml").model_dump()
    data.update(changes)
    stored, _ = digests.publish(session, digests.Digest.model_validate(data))
    return stored.slug


def test_a_good_digest_has_no_errors_or_warnings(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    slug = publish_sample(session).slug
    found = levels(deliverability.check(session, settings, slug, spamassassin=False))
    assert found["error"] == [] and found["warning"] == []
    assert any(message.startswith("the HTML is ") for message in found["info"])


@SPAMASSASSIN
def test_spamassassin_score_is_reported(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    slug = publish_sample(session).slug
    findings = deliverability.check(session, settings, slug, "weekly")
    (spam,) = [f for f in findings if "SpamAssassin" in f.message]
    assert spam.level == "info" and spam.message.startswith("SpamAssassin score ")


@SPAMASSASSIN
def test_spamassassin_rules_that_fired_are_named() -> None:
    message = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"  # no Date, no Message-ID
    (finding,) = deliverability.spamassassin_findings(message)
    assert finding.level == "warning"
    assert "MISSING_DATE +" in finding.message


def test_list_without_postal_address_is_an_error(session: Session, settings: Settings) -> None:
    make_list(session, slug="bare", postal_address="")
    slug = publish_sample(session).slug
    errors = levels(deliverability.check(session, settings, slug, "bare", spamassassin=False))["error"]
    assert errors == [
        "list 'bare' has no postal address; the law in most places (CAN-SPAM, CASL) wants one in every "
        "newsletter: set the list's postal address"
    ]


def test_subject_length(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    slug = publish(session, title="A weekly digest " + "x" * 63)
    warnings = levels(deliverability.check(session, settings, slug, spamassassin=False))["warning"]
    assert warnings == ["the subject is 79 characters; many clients cut it after ~78"]
    errors = levels(deliverability.check(session, settings, slug, subject=" ", spamassassin=False))["error"]
    assert errors == ["the subject is empty"]


def test_html_size_limits(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    base = digests.load_digest(DIGESTS / "ten-items.yaml").model_dump()
    item = base["items"][0]
    long_items = [
        {**item, "url": f"{item['url']}?n={n}", "summary": "Lorem ipsum dolor sit amet. " * 40} for n in range(60)
    ]
    slug = publish(session, slug="huge", items=long_items)
    errors = levels(deliverability.check(session, settings, slug, spamassassin=False))["error"]
    assert len(errors) == 1 and errors[0].startswith("the HTML is ") and "Gmail clips" in errors[0]
    slug = publish(session, slug="large", items=long_items[:30])
    warnings = levels(deliverability.check(session, settings, slug, spamassassin=False))["warning"]
    assert len(warnings) == 1 and "close to Gmail's ~102 KB clipping limit" in warnings[0]


def test_template_problems_name_the_item(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    slug = publish(session)
    source = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>"
        "{% for s in sections %}{% for item in s['items'] %}"
        '<a href="{{ item.href }}">{{ item.headline }}</a>'
        '{% if item.image %}<img src="{{ item.image }}">{% endif %}{% endfor %}{% endfor %}'
        '<a href="/archive">Archive</a><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
        "</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    templates.save_template(session, "careless", source)
    found = deliverability.check(session, settings, slug, template="careless", spamassassin=False)
    errors = [f for f in found if f.level == "error"]
    messages = [f.message for f in errors]
    assert "link '/archive' is not an absolute http(s) or mailto URL" in messages
    assert "the text part does not show the list's postal address" not in messages  # text part is not templated
    assert "the HTML part does not show the list's postal address" in messages
    (no_alt,) = [f for f in errors if "has no alt text" in f.message]
    assert (no_alt.item, no_alt.headline) == (10, "A conference opens its call for talks")


def test_create_campaign_refuses_on_errors_and_stores_nothing(session: Session) -> None:
    make_list(session, slug="bare", postal_address="")
    make_list(session, slug="weekly")
    slug = publish_sample(session).slug
    with pytest.raises(delivery.CampaignError) as caught:
        delivery.create_campaign(session, digest_slug=slug, list_slugs=["weekly", "bare"])
    message = str(caught.value)
    assert message.startswith(f"digest {slug!r} fails the pre-send check: list 'bare': list 'bare' has no postal")
    assert "(see `newsletter digests check`)" in message
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    # a good list goes through
    assert delivery.create_campaign(session, digest_slug=slug, list_slugs=["weekly"]).id


def test_finding_serialises() -> None:
    finding = Finding("error", "image 'x' has no alt text", 3, "Headline")
    assert json.loads(json.dumps(finding.as_dict())) == {
        "level": "error",
        "message": "image 'x' has no alt text",
        "item": 3,
        "headline": "Headline",
    }
    assert str(finding) == "error: item 3 (Headline): image 'x' has no alt text"
