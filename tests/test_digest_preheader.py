"""A digest's own preheader (the inbox snippet): written in Markdown front matter, YAML or JSON, through
the API and the admin's form; the email's hidden snippet is that line instead of the intro's first words;
a bad one is refused before anything is stored; digests without one keep their content hash."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import digests, rendering
from newsletter.config import Settings
from newsletter.models import Digest, Role
from newsletter.rendering import ListLook, Theme
from tests.admin import AdminWeb, csrf_from
from tests.apiclient import Api, api_client

SNIPPET = "Railways, wheat and a new airport — five stories from the week"
INTRO = "This week the foreign press wrote about freight corridors across the steppe."
MARKDOWN = f"""---
title: Steppe Weekly
date: 2025-04-26
preheader: {SNIPPET}
---

{INTRO}

## Kazakhstan plans a new railway link
Source: Example Wire · 2025-04-21 · https://example.com/rail

A freight corridor to the Caspian ports.
"""
LOOK = ListLook(Theme("Steppe Weekly"), "Steppe Weekly", "Weekly", True, None, "steppe", True)
HIDDEN = re.compile(r'<div class="preheader" style="display:none[^"]*">([^<]*)</div>')


def _data(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "title": "Steppe Weekly",
        "date": "2025-04-26",
        "intro": INTRO,
        "preheader": SNIPPET,
        "items": [{"headline": "A railway link", "source": "Example Wire", "url": "https://example.com/rail"}],
    }
    return {**data, **changes}


def _snippet(digest: digests.Digest) -> str:
    found = HIDDEN.search(rendering.render_for_list(digest, LOOK, base_url="https://news.example.org").html)
    assert found, "no hidden preheader"
    return found[1]


def test_the_preheader_is_read_from_every_format_and_written_back() -> None:
    from_markdown = digests.parse_digest(MARKDOWN, "md")
    assert from_markdown.preheader == SNIPPET and from_markdown.intro == INTRO
    from_json = digests.parse_digest(json.dumps(_data()), "json")
    yaml_text = (
        f"title: Steppe Weekly\ndate: 2025-04-26\npreheader: {SNIPPET}\n"
        "items:\n  - {headline: A, source: S, url: 'https://example.com/a'}\n"
    )
    from_yaml = digests.parse_digest(yaml_text, "yaml")
    assert from_json.preheader == from_yaml.preheader == SNIPPET
    written = digests.to_markdown(from_markdown)
    assert f"preheader: '{SNIPPET}'" in written or f"preheader: {SNIPPET}" in written
    assert digests.parse_digest(written, "md") == from_markdown


def test_the_email_snippet_is_the_preheader_else_the_intro() -> None:
    with_one = digests.parse_digest(MARKDOWN, "md")
    assert _snippet(with_one) == SNIPPET
    without = with_one.model_copy(update={"preheader": None})
    assert _snippet(without) == INTRO  # as before: the intro's first words
    assert SNIPPET not in rendering.render_for_list(without, LOOK, base_url="https://x.org").html


@pytest.mark.parametrize(
    ("preheader", "problem"),
    [("two\nlines", "single line"), ("x" * 256, "at most 255 characters"), ("nul\x00here", "single line")],
)
def test_a_bad_preheader_is_refused(preheader: str, problem: str) -> None:
    with pytest.raises(digests.InvalidDigest, match="preheader") as refused:
        digests.parse_digest(json.dumps(_data(preheader=preheader)), "json")
    assert problem in str(refused.value)


def test_stored_and_read_back_and_old_hashes_kept(session: Session) -> None:
    stored, created = digests.publish(session, digests.parse_digest(MARKDOWN, "md"))
    assert created and stored.preheader == SNIPPET
    assert digests.from_stored(stored).preheader == SNIPPET
    plain = digests.parse_digest(json.dumps(_data(preheader="  ")), "json")
    assert plain.preheader is None and "preheader" not in plain.canonical_json()  # hashes of older digests hold


@pytest.fixture
def api(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(settings, sessions) as client:
        yield client


def test_the_api_takes_and_shows_the_preheader_and_refuses_a_bad_one(api: Api) -> None:
    created = api.call("POST", "/api/v1/digests", "editor", json=_data(slug="steppe"))
    assert created.status_code == 201
    assert api.call("GET", "/api/v1/digests/steppe", "editor").json()["preheader"] == SNIPPET
    changed = api.call("PUT", "/api/v1/digests/steppe", "editor", json=_data(slug="steppe", preheader="New line"))
    assert changed.status_code == 200 and changed.json()["preheader"] == "New line"
    refused = api.call("PUT", "/api/v1/digests/steppe", "editor", json=_data(slug="steppe", preheader="a\nb"))
    assert refused.status_code == 422 and "preheader" in refused.text
    with api.sessions() as session:
        assert session.scalars(select(Digest.preheader)).all() == ["New line"]


def test_the_admin_form_saves_the_preheader(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.editor)
    page = client.get("/admin/digests/new")
    assert 'name="preheader"' in page.text and "Inbox snippet" in page.text
    form = {
        "csrf_token": csrf_from(page.text),
        "title": "Steppe Weekly",
        "date": "2025-04-26",
        "preheader": "two\nlines",
        "items-0-headline": "A railway link",
        "items-0-source": "Example Wire",
        "items-0-url": "https://example.com/rail",
        "action": "save",
    }
    refused = client.post("/admin/digests/new", data=form)
    assert refused.status_code == 422 and "single line" in refused.text
    with admin_web.sessions() as session:
        assert session.scalars(select(Digest)).all() == []
    created = client.post("/admin/digests/new", data={**form, "preheader": SNIPPET})
    assert created.status_code == 303
    with admin_web.sessions() as session:
        assert session.scalars(select(Digest.preheader)).all() == [SNIPPET]
    assert f'value="{SNIPPET}"' in client.get(created.headers["location"]).text
