"""The admin's list pages over HTTP, both backends: the table, a new list (theme, CORS origins, form fields),
each bad value refused beside its field with nothing stored, the embed snippet, the export, delete after
the slug is typed. And for every page of lists, subscribers, imports and suppressions: editors get 403,
strangers the sign-in page, a POST without the CSRF token 403 with nothing changed."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter import lists
from newsletter.models import MailingList, Role, Subscription
from newsletter.web.admin import lists as list_pages
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list, make_subscriber, make_subscribers

TAGS = re.compile(r"<[^>]+>")


def text_of(page: str) -> str:
    return " ".join(html.unescape(TAGS.sub(" ", page)).split())


def error_of(page: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="err-{field}">(.*?)</p>', page, re.S)
    assert match, f"no error slot for {field}"
    return html.unescape(match[1]).strip()


GOOD = {
    "slug": "kz-weekly",
    "name": "Kazakhstan Weekly",
    "description": "What the foreign press wrote this week",
    "from_name": "KZ Weekly",
    "from_email": "news@example.org",
    "reply_to": "editors@example.org",
    "opt_in": "double",
    "visibility": "public",
    "postal_address": "1 Example Street, Astana",
    "publication_name": "KZ Weekly",
    "logo_url": "https://example.org/logo.png",
    "accent_color": "#1a5fb4",
    "tracking": "on",
    "cors_origins": "https://example.org\nhttps://blog.example.org:8443/",
    "form_fields": "company:Company\ncity:Your city:required",
}


def post_new(admin_web: AdminWeb, client: Any, **changes: str) -> Any:
    form = client.get("/admin/lists/new")
    return client.post("/admin/lists/new", data={**GOOD, **changes, "csrf_token": csrf_from(form.text)})


def list_count(admin_web: AdminWeb) -> int:
    with admin_web.sessions() as session:
        return session.scalar(select(func.count()).select_from(MailingList)) or 0


def test_a_new_list_keeps_everything_it_was_given(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    assert "No lists yet" in client.get("/admin/lists").text
    answer = post_new(admin_web, client)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/lists/kz-weekly"
    with admin_web.sessions() as session:
        stored = lists.get_list(session, "kz-weekly")
        assert (stored.name, stored.reply_to, stored.tracking) == ("Kazakhstan Weekly", "editors@example.org", True)
        assert stored.theme == {"publication_name": "KZ Weekly", "logo_url": "https://example.org/logo.png",
                                "accent_color": "#1a5fb4"}  # fmt: skip
        assert stored.cors_origins == ["https://example.org", "https://blog.example.org:8443"]
        assert stored.form_fields == [
            {"name": "company", "label": "Company", "required": False},
            {"name": "city", "label": "Your city", "required": True},
        ]
    page = client.get("/admin/lists/kz-weekly").text
    assert "Created the list Kazakhstan Weekly." in page
    # the embed snippet posts to the public form, with the extra fields as the form names them
    snippet = html.unescape(page)
    assert f'<form method="post" action="{admin_web.settings.base_url}/subscribe/kz-weekly">' in snippet
    assert '<input type="text" name="attr.city" required>' in snippet and '"city": ""' in snippet
    assert "Kazakhstan Weekly" in client.get("/admin/lists").text


BAD_VALUES = [
    ("accent_color", "blue", "hex colour"),
    ("cors_origins", "https://example.org/path", "is not an origin"),
    ("cors_origins", "example.org", "is not an origin"),
    ("logo_url", "javascript:alert(1)", "absolute http(s) URL"),
    ("from_email", "not an address", "@-sign"),
    ("reply_to", "two@@example.org", "invalid characters"),
    ("slug", "Bad Slug", "lowercase letters"),
    ("slug", "new", "taken by the admin's own pages"),
    ("form_fields", "e mail:Mail", "cannot name a field"),
    ("form_fields", "email:Mail", "cannot name a field"),
    ("name", "   ", "Give the list a name"),
    # PostgreSQL cannot store a NUL: refused beside the field (these were 500s)
    ("name", "Weekly\x00", "NUL"),
    ("from_name", "Ed\x00", "NUL"),
    ("postal_address", "1 Street\x00", "NUL"),
    ("publication_name", "KZ\x00", "NUL"),
]


def test_each_bad_value_is_refused_beside_its_field_and_nothing_is_stored(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    for field, value, message in BAD_VALUES:
        answer = post_new(admin_web, client, **{field: value})
        assert answer.status_code == 422, field
        assert message in error_of(answer.text, field), (field, error_of(answer.text, field))
        if field != "name":  # the other values are kept
            assert 'value="Kazakhstan Weekly"' in answer.text
        assert "Nothing was saved" in answer.text
    assert list_count(admin_web) == 0


def test_editing_changes_the_list_and_a_bad_origin_changes_nothing(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly", name="Weekly")
    client = admin_web.signed_in(Role.admin)
    page = client.get("/admin/lists/weekly")
    data = {**GOOD, "name": "Weekly, renamed", "tracking": "", "csrf_token": csrf_from(page.text)}
    del data["slug"], data["tracking"]
    assert client.post("/admin/lists/weekly", data=data).status_code == 303
    with admin_web.sessions() as session:
        stored = lists.get_list(session, "weekly")
        assert (stored.name, stored.tracking, stored.cors_origins[0]) == (
            "Weekly, renamed",
            False,
            "https://example.org",
        )
    bad = client.post("/admin/lists/weekly", data={**data, "name": "Other", "cors_origins": "ftp://x"})
    assert bad.status_code == 422 and "is not an origin" in error_of(bad.text, "cors_origins")
    assert 'value="Other"' in bad.text
    with admin_web.sessions() as session:
        assert lists.get_list(session, "weekly").name == "Weekly, renamed"


def test_delete_says_what_it_removes_and_needs_the_slug_typed(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 3)
        make_subscriber(session, weekly, "waiting@example.com", confirmed=False)
    client = admin_web.signed_in(Role.admin)
    page = client.get("/admin/lists/weekly/delete")
    assert "4 subscription(s): 3 confirmed, 1 waiting to confirm" in text_of(page.text)
    wrong = client.post(
        "/admin/lists/weekly/delete", data={"confirm_slug": "weekl", "csrf_token": csrf_from(page.text)}
    )
    assert wrong.status_code == 422 and "Type weekly exactly" in error_of(wrong.text, "confirm_slug")
    assert list_count(admin_web) == 1
    done = client.post(
        "/admin/lists/weekly/delete", data={"confirm_slug": "weekly", "csrf_token": csrf_from(page.text)}
    )
    assert done.status_code == 303 and list_count(admin_web) == 0
    with admin_web.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_delete_of_a_list_with_a_sequence_says_it_goes_too_and_removes_it(admin_web: AdminWeb) -> None:
    from newsletter import sequences
    from newsletter.models import Campaign, EmailSequence

    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 2)
        sequences.create_sequence(session, "weekly")
        for subject in ("Welcome", "A week in"):
            sequences.add_step(session, admin_web.settings, "weekly", subject=subject, body="Hello.")
        sequences.enable(session, "weekly")
    client = admin_web.signed_in(Role.admin)
    page = client.get("/admin/lists/weekly/delete")
    said = text_of(page.text)
    assert "removes its welcome sequence: 2 step(s)" in said and "0 welcome email(s) sent or due" in said
    done = client.post(
        "/admin/lists/weekly/delete", data={"confirm_slug": "weekly", "csrf_token": csrf_from(page.text)}
    )
    assert done.status_code == 303 and list_count(admin_web) == 0
    assert "its welcome sequence" in text_of(client.get(done.headers["location"]).text)
    with admin_web.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EmailSequence)) == 0
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_the_export_streams_the_chosen_status_with_cells_neutralised(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly")
        make_subscriber(session, weekly, "ana@example.com", name="=HYPERLINK(1)")
        make_subscriber(session, weekly, "pending@example.com", confirmed=False)
    client = admin_web.signed_in(Role.admin)
    confirmed = client.get("/admin/lists/weekly/export")
    assert confirmed.status_code == 200 and "attachment" in confirmed.headers["content-disposition"]
    assert "ana@example.com,'=HYPERLINK(1),confirmed" in confirmed.text and "pending@" not in confirmed.text
    assert "pending@example.com" in client.get("/admin/lists/weekly/export?status=pending").text


# --- every page of this family: roles, sign-in, CSRF ----------------------------------------------------

PAGES = ["/admin/lists", "/admin/lists/new", "/admin/lists/weekly", "/admin/lists/weekly/delete",
         "/admin/lists/weekly/export", "/admin/subscribers", "/admin/subscribers/export", "/admin/imports",
         "/admin/suppressions"]  # fmt: skip
FORMS = ["/admin/lists/new", "/admin/lists/weekly", "/admin/lists/weekly/delete", "/admin/suppressions/add",
         "/admin/suppressions/domains", "/admin/suppressions/remove", "/admin/imports"]  # fmt: skip


def test_editors_get_403_and_strangers_the_sign_in_page(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly")
    editor = admin_web.signed_in(Role.editor)
    for path in PAGES:
        assert editor.get(path).status_code == 403, path
        answer = admin_web.client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in?next="), path
    assert "Lists" not in editor.get("/admin").text.split("<main")[0]


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly", name="Weekly")
    client = admin_web.signed_in(Role.admin)
    for path in FORMS:
        data = {**GOOD, "slug": "other", "confirm_slug": "weekly", "addresses": "x@example.com", "domain": "spam.test"}
        answer = client.post(path, data=data)
        assert answer.status_code == 403, path
        assert "nothing was changed" in text_of(answer.text)
    with admin_web.sessions() as session:
        assert [m.name for m in lists.all_lists(session)] == ["Weekly"]
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_every_fixed_page_under_lists_is_a_reserved_slug(admin_web: AdminWeb) -> None:
    """A list whose slug is a page's name (/admin/lists/new) could never be opened: such slugs are refused."""
    fixed = {
        path.removeprefix("/admin/lists/").partition("/")[0]
        for path in (getattr(route, "path", "") for route in list_pages.router.routes)
        if path.startswith("/admin/lists/") and not path.startswith("/admin/lists/{")
    }
    assert fixed == {"new"} and fixed <= lists.RESERVED_SLUGS
    with admin_web.sessions() as session, pytest.raises(lists.InvalidList, match="reserved for the admin's pages"):
        lists.create_list(session, slug="new", name="New", from_email="news@example.org")
