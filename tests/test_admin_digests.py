"""The digest pages over HTTP on both backends: the table, the editor (form, Markdown, autosave, buttons),
the preview frame, the pre-send check, frozen digests, CSRF on every POST, and markup shown as text."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import select

from newsletter import delivery, digests
from newsletter.models import Digest, Role
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list, make_subscribers

XSS = "<script>alert(1)</script>"
DRAFT: dict[str, Any] = {
    "title": "Weekly",
    "date": "2025-04-26",
    "slug": "weekly",
    "items": [
        {"headline": "Rail deal", "source": "Ariana", "url": "https://example.com/rail", "summary": "Trains."},
        {"headline": "Visitors", "source": "Azernews", "url": "https://example.com/visit", "section": "Tourism"},
    ],
}


def store(admin_web: AdminWeb, **changes: Any) -> None:
    with admin_web.sessions.begin() as session:
        digests.publish(session, digests.Digest.model_validate({**DRAFT, **changes}))


def with_list(admin_web: AdminWeb, slug: str = "weekly-list", **fields: Any) -> None:
    with admin_web.sessions.begin() as session:
        make_subscribers(session, make_list(session, slug=slug, **fields), 1, prefix=slug)


def stored(admin_web: AdminWeb) -> list[tuple[Any, ...]]:
    with admin_web.sessions() as session:
        rows = session.scalars(select(Digest).order_by(Digest.id)).all()
        return [(d.slug, d.title, d.content_hash, [(i.headline, i.url) for i in d.items]) for d in rows]


def form_of(admin_web: AdminWeb, slug: str = "weekly") -> dict[str, str]:
    """The editor's form fields as the page has them, the way a browser would submit them."""
    with admin_web.sessions() as session:
        model = digests.from_stored(digests.get_published(session, slug))
    fields = {"title": model.title, "date": model.date.isoformat(), "language": model.language or "", "intro": ""}
    for index, item in enumerate(model.items):
        for name, value in item.model_dump(mode="json").items():
            fields[f"items-{index}-{name}"] = value or ""
    return fields


def test_the_table_lists_drafts_and_sent_digests_with_status_words(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.editor)
    empty = client.get("/admin/digests")
    assert empty.status_code == 200 and "No digests yet" in empty.text and 'href="/admin/digests/new"' in empty.text
    with_list(admin_web)
    store(admin_web)
    store(admin_web, slug="sent-one", title="Sent one")
    with admin_web.sessions.begin() as session:
        delivery.create_campaign(session, digest_slug="sent-one", list_slugs=["weekly-list"])
    page = client.get("/admin/digests")
    assert '<span class="status status-draft">draft</span>' in page.text
    assert '<span class="status status-ready">ready</span>' in page.text
    assert 'href="/admin/digests/weekly"' in page.text and 'href="/admin/digests/sent-one"' in page.text
    found = client.get("/admin/digests", params={"q": "sent"})
    assert "Sent one" in found.text and 'href="/admin/digests/weekly"' not in found.text
    assert "No digest matches" in client.get("/admin/digests", params={"q": "zzz"}).text
    fragment = client.get(
        "/admin/digests", params={"q": "sent"}, headers={"HX-Request": "true", "HX-Target": "digest-table"}
    )
    assert fragment.text.startswith('<div id="digest-table">') and "<html" not in fragment.text
    assert client.get("/admin/digests", params={"older": "forged"}).status_code == 422


def test_pages_are_keyset_paginated(admin_web: AdminWeb) -> None:
    for n in range(27):
        store(admin_web, slug=f"d{n:02d}", title=f"Issue {n:02d}", date=f"2025-01-{n + 1:02d}")
    client = admin_web.signed_in(Role.editor)
    first = client.get("/admin/digests").text
    assert "Issue 26" in first and "Issue 02" in first and "Issue 01" not in first and ">Newer<" not in first
    older = re.search(r'href="(/admin/digests\?older=[^"]+)"', first)
    assert older
    second = client.get(html.unescape(older[1])).text
    assert "Issue 01" in second and "Issue 00" in second and "Issue 26" not in second and ">Newer<" in second


def test_a_new_draft_is_created_from_the_form_and_bad_fields_are_explained(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.editor)
    page = client.get("/admin/digests/new")
    token = csrf_from(page.text)
    bad = {
        "csrf_token": token,
        "title": "",
        "date": "2025-02-30",
        "items-0-headline": "A",
        "items-0-url": "ftp://x",
        "action": "save",
    }
    refused = client.post("/admin/digests/new", data=bad)
    assert refused.status_code == 422
    text = html.unescape(refused.text)
    assert "Title: must not be empty" in text or "Title: is required" in text
    assert "expected a date like 2025-04-26, got '2025-02-30'" in text
    assert "must be an absolute http(s) URL, got 'ftp://x'" in text
    assert 'value="ftp://x"' in refused.text  # what was typed is kept
    assert stored(admin_web) == []
    blank = client.post("/admin/digests/new", data={"csrf_token": token, "items-0-headline": "", "action": "save"})
    assert blank.status_code == 422
    assert 'id="err-items">a digest needs at least one item' in blank.text and "Title: is required" in blank.text
    added = client.post("/admin/digests/new", data={**bad, "action": "add"})
    assert added.status_code == 200 and 'name="items-1-headline"' in added.text and 'value="ftp://x"' in added.text
    good = {
        "csrf_token": token,
        "title": "First issue",
        "date": "2025-04-26",
        "items-0-headline": "A",
        "items-0-source": "S",
        "items-0-url": "https://example.com/a",
        "items-1-headline": "",
        "action": "save",
    }
    created = client.post("/admin/digests/new", data=good)
    assert created.status_code == 303 and created.headers["location"] == "/admin/digests/2025-04-26-first-issue"
    assert stored(admin_web)[0][:2] == ("2025-04-26-first-issue", "First issue")  # the blank item is left out
    assert len(stored(admin_web)[0][3]) == 1


def test_the_editor_saves_reorders_adds_and_removes_without_javascript(admin_web: AdminWeb) -> None:
    with_list(admin_web)
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    page = client.get("/admin/digests/weekly")
    assert page.status_code == 200 and 'value="Rail deal"' in page.text
    assert 'sandbox=""' in page.text and 'src="/admin/digests/weekly/preview?' in page.text
    assert 'href="/admin/campaigns/new?digest=weekly"' in page.text
    token = csrf_from(page.text)
    fields = {**form_of(admin_web), "csrf_token": token}
    moved = client.post("/admin/digests/weekly", data={**fields, "action": "down:0"})
    assert moved.status_code == 200
    assert [h for h, _ in stored(admin_web)[0][3]] == ["Visitors", "Rail deal"]  # valid, so saved
    assert moved.text.index('value="Visitors"') < moved.text.index('value="Rail deal"')
    added = client.post("/admin/digests/weekly", data={**form_of(admin_web), "csrf_token": token, "action": "add"})
    assert 'name="items-2-headline"' in added.text and len(stored(admin_web)[0][3]) == 2
    removed = client.post(
        "/admin/digests/weekly", data={**form_of(admin_web), "csrf_token": token, "action": "remove:0"}
    )
    assert removed.status_code == 200 and [h for h, _ in stored(admin_web)[0][3]] == ["Rail deal"]
    saved = client.post("/admin/digests/weekly", data={**form_of(admin_web), "title": "Weekly 2", "csrf_token": token})
    assert saved.status_code == 303 and stored(admin_web)[0][1] == "Weekly 2"
    assert "Saved." in client.get("/admin/digests/weekly").text


def test_a_bad_edit_is_shown_beside_its_field_and_changes_nothing(admin_web: AdminWeb) -> None:
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    token = csrf_from(client.get("/admin/digests/weekly").text)
    before = stored(admin_web)
    bad = {
        **form_of(admin_web),
        "items-1-url": "javascript:alert(1)",
        "items-0-image": "http://example.com/i.jpg",
        "csrf_token": token,
    }
    refused = client.post("/admin/digests/weekly", data=bad)
    assert refused.status_code == 422
    assert re.search(r'id="err-items-1-url">must be an absolute http\(s\) URL', refused.text)
    assert re.search(r'id="err-items-0-image">must be an absolute https URL', refused.text)
    assert 'href="#items-1-url">Item 2, URL:' in refused.text
    assert stored(admin_web) == before
    autosaved = client.post("/admin/digests/weekly/autosave", data=bad, headers={"HX-Request": "true"})
    assert autosaved.status_code == 200 and "Not saved: 2 problems" in autosaved.text
    assert 'id="err-items-1-url" hx-swap-oob="true">must be an absolute' in autosaved.text
    assert stored(admin_web) == before


def test_autosave_saves_and_refreshes_the_preview(admin_web: AdminWeb) -> None:
    with_list(admin_web)
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    token = csrf_from(client.get("/admin/digests/weekly").text)
    before = stored(admin_web)[0][2]
    answer = client.post(
        "/admin/digests/weekly/autosave",
        data={**form_of(admin_web), "items-0-headline": "Rail deal signed", "csrf_token": token, "width": "320"},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200 and re.search(r"Saved \d\d:\d\d UTC", answer.text)
    after = stored(admin_web)[0][2]
    assert after != before and f"v={after[:12]}" in answer.text and "frame-320" in answer.text
    frame = re.search(r'src="(/admin/digests/weekly/preview\?[^"]+)"', answer.text)
    assert frame
    email = client.get(html.unescape(frame[1]))
    assert "Rail deal signed" in email.text
    assert email.headers["content-security-policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")


def test_the_markdown_tab_edits_the_same_draft(admin_web: AdminWeb) -> None:
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    page = client.get("/admin/digests/weekly?view=markdown")
    with admin_web.sessions() as session:
        expected = digests.to_markdown(digests.from_stored(digests.get_published(session, "weekly")))
    shown = re.search(r'<textarea id="markdown"[^>]*>(.*?)</textarea>', page.text, re.DOTALL)
    assert shown and html.unescape(shown[1]) == expected
    token = csrf_from(page.text)
    saved = client.post(
        "/admin/digests/weekly/markdown",
        data={"markdown": expected.replace("Trains.", "Many trains."), "csrf_token": token},
    )
    assert saved.status_code == 303
    assert "Many trains." in client.get("/admin/digests/weekly").text  # the form shows it
    before = stored(admin_web)
    broken = expected.replace("URL: https://example.com/rail", "URL: nope")
    refused = client.post("/admin/digests/weekly/markdown", data={"markdown": broken, "csrf_token": token})
    assert refused.status_code == 422 and "url: must be an absolute http(s) URL, got &#39;nope&#39;" in refused.text
    assert "URL: nope" in refused.text  # kept
    assert stored(admin_web) == before


def test_the_preview_follows_the_list_and_dark_mode(admin_web: AdminWeb) -> None:
    with_list(admin_web, "first", name="First List")
    with_list(admin_web, "second", name="Second List", postal_address="2 Other Street")
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    frame = client.get("/admin/digests/weekly/frame", params={"list": "second", "width": "320", "scheme": "dark"})
    assert "frame-320" in frame.text and "list=second" in frame.text and "scheme=dark" in frame.text
    light = client.get("/admin/digests/weekly/preview", params={"list": "second"}).text
    dark = client.get("/admin/digests/weekly/preview", params={"list": "second", "scheme": "dark"}).text
    assert "2 Other Street" in light and "@media (prefers-color-scheme: dark)" in light
    assert "fonts.googleapis.com" not in light  # the email asks no other host for anything but its images
    assert "@media (prefers-color-scheme: dark)" not in dark and "@media all" in dark
    assert client.get("/admin/digests/weekly/preview", params={"list": "nope"}).status_code == 404


def test_the_check_panel_points_at_items_and_shows_the_size(admin_web: AdminWeb) -> None:
    with_list(admin_web)
    store(admin_web, items=[{**DRAFT["items"][0], "image": "https://example.com/i.jpg"}])
    client = admin_web.signed_in(Role.editor)
    panel = client.get("/admin/digests/weekly/check", headers={"HX-Request": "true"})
    assert panel.status_code == 200 and panel.text.startswith('<section id="check-panel"')
    assert re.search(r'<meter id="html-size" min="0" max="102400"', panel.text)
    assert "Gmail clips an email above ~102 KB" in panel.text
    assert 'href="/admin/digests/weekly#item-1">Item 1 (Rail deal)</a>: the image has no description' in panel.text
    full = client.get("/admin/digests/weekly?check=1")
    assert 'id="check-panel"' in full.text and "<meter" in full.text


def test_a_frozen_digest_is_read_only_and_duplicates_to_edit(admin_web: AdminWeb) -> None:
    with_list(admin_web)
    store(admin_web)
    with admin_web.sessions.begin() as session:
        campaign_id = delivery.create_campaign(session, digest_slug="weekly", list_slugs=["weekly-list"]).id
    client = admin_web.signed_in(Role.editor)
    page = client.get("/admin/digests/weekly")
    assert "Duplicate to edit" in page.text and f'href="/admin/campaigns/{campaign_id}"' in page.text
    assert 'name="items-0-headline"' not in page.text
    token = csrf_from(page.text)
    before = stored(admin_web)
    refused = client.post("/admin/digests/weekly", data={**form_of(admin_web), "title": "X", "csrf_token": token})
    assert refused.status_code == 409 and "duplicate it to edit" in refused.text
    assert stored(admin_web) == before
    copy = client.post("/admin/digests/weekly/duplicate", data={"csrf_token": token})
    assert copy.status_code == 303 and copy.headers["location"] == "/admin/digests/weekly-copy"
    assert 'name="items-0-headline"' in client.get("/admin/digests/weekly-copy").text


@pytest.mark.parametrize(
    "path",
    [
        "/admin/digests/new",
        "/admin/digests/new/markdown",
        "/admin/digests/weekly",
        "/admin/digests/weekly/autosave",
        "/admin/digests/weekly/markdown",
        "/admin/digests/weekly/duplicate",
    ],
)
def test_every_post_needs_the_csrf_token(admin_web: AdminWeb, path: str) -> None:
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    before = stored(admin_web)
    fields = {**form_of(admin_web), "title": "Changed", "markdown": "---\ntitle: x\n---\n", "action": "save"}
    for token in (None, "forged"):
        data = fields if token is None else {**fields, "csrf_token": token}
        answer = client.post(path, data=data)
        assert answer.status_code == 403, (path, token)
    assert stored(admin_web) == before
    assert admin_web.new_client().post(path, data=fields).status_code == 303  # not signed in: to the sign-in


def test_markup_in_a_title_is_shown_as_text_everywhere(admin_web: AdminWeb) -> None:
    with_list(admin_web)
    store(admin_web, title=XSS, items=[{**DRAFT["items"][0], "headline": XSS}])
    client = admin_web.signed_in(Role.editor)
    for path in (
        "/admin/digests",
        "/admin/digests/weekly",
        "/admin/digests/weekly?view=markdown",
        "/admin/digests/weekly/preview",
    ):
        page = client.get(path)
        assert page.status_code == 200 and XSS not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path


def test_a_new_draft_can_be_pasted_as_markdown(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.editor)
    token = csrf_from(client.get("/admin/digests/new").text)
    text = digests.to_markdown(digests.Digest.model_validate(DRAFT))
    refused = client.post(
        "/admin/digests/new/markdown",
        data={"markdown": text.replace("date: '2025-04-26'", "date: soon"), "csrf_token": token},
    )
    assert refused.status_code == 422 and "date: expected a date like 2025-04-26, got &#39;soon&#39;" in refused.text
    assert "date: soon" in refused.text  # kept for fixing
    assert stored(admin_web) == []
    created = client.post("/admin/digests/new/markdown", data={"markdown": text, "csrf_token": token})
    assert created.status_code == 303 and created.headers["location"] == "/admin/digests/weekly"
    before = stored(admin_web)
    taken = client.post(
        "/admin/digests/new/markdown", data={"markdown": text.replace("Trains.", "Buses."), "csrf_token": token}
    )
    assert taken.status_code == 409 and "already taken by a digest with different content" in taken.text
    assert stored(admin_web) == before


def test_without_a_list_the_editor_says_why_there_is_no_preview(admin_web: AdminWeb) -> None:
    store(admin_web)
    client = admin_web.signed_in(Role.editor)
    page = client.get("/admin/digests/weekly")
    assert page.status_code == 200 and "<iframe" not in page.text and "there is no list yet" in page.text
    shown = client.get("/admin/digests/weekly/preview")
    assert shown.status_code == 200 and "create one with `newsletter lists create`" in shown.text
    check = client.get("/admin/digests/weekly/check")
    assert "Create a mailing list first" in check.text
