"""Readers' languages in the admin, both backends: a list's language chosen from the catalogs found (and
shown on its page and in the table), a subscriber's language shown and changed; a value that is no catalog
refused beside its field with nothing changed; a POST without the CSRF token refused."""

from __future__ import annotations

import html
import re

from sqlalchemy import select

from newsletter import i18n, lists
from newsletter.models import AuditEntry, Role, Subscriber
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list, make_subscriber
from tests.test_admin_lists import GOOD, error_of, list_count, post_new, text_of


def _selected(page: str, name: str) -> str:
    select_ = re.search(rf'<select id="f-{name}" name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert select_, f"no {name} select"
    chosen = re.findall(r'<option value="([^"]*)" selected>', select_[1])
    assert len(chosen) <= 1
    return chosen[0] if chosen else "(none)"


def _options(page: str, name: str) -> list[str]:
    select_ = re.search(rf'<select id="f-{name}" name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert select_
    return re.findall(r'<option value="([^"]*)"', select_[1])


def test_a_lists_language_is_chosen_from_the_catalogs_and_shown(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    form = client.get("/admin/lists/new").text
    assert _options(form, "language") == ["", *i18n.available()]  # every catalog found, no list of our own
    assert "Қазақ тілі (kk)" in form and "Русский (ru)" in form
    assert post_new(admin_web, client, language="kk").status_code == 303
    with admin_web.sessions() as session:
        assert lists.get_list(session, "kz-weekly").language == "kk"
    page = client.get("/admin/lists/kz-weekly").text
    assert _selected(page, "language") == "kk" and "Language Қазақ тілі (kk)" in text_of(page)
    assert "<td>kk</td>" in client.get("/admin/lists").text
    # changed to Russian, then cleared (the pages then follow each reader's browser)
    for chosen, stored in (("ru", "ru"), ("", None)):
        data = {**GOOD, "language": chosen, "csrf_token": csrf_from(page)}
        del data["slug"]
        assert client.post("/admin/lists/kz-weekly", data=data).status_code == 303
        with admin_web.sessions() as session:
            assert lists.get_list(session, "kz-weekly").language == stored
    page = client.get("/admin/lists/kz-weekly").text
    assert _selected(page, "language") == "" and "each reader's browser decides" in text_of(page)


def test_a_language_without_a_catalog_is_refused_beside_the_field_and_nothing_changes(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    refused = post_new(admin_web, client, language="klingon")
    assert refused.status_code == 422 and "Nothing was saved" in refused.text
    assert "language must be one of en, kk, ru" in error_of(refused.text, "language")
    assert 'value="Kazakhstan Weekly"' in refused.text and list_count(admin_web) == 0
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly", name="Weekly", language="ru")
    page = client.get("/admin/lists/weekly").text
    data = {**GOOD, "name": "Renamed", "language": "xx", "csrf_token": csrf_from(page)}
    del data["slug"]
    bad = client.post("/admin/lists/weekly", data=data)
    assert bad.status_code == 422 and "language must be one of" in error_of(bad.text, "language")
    assert 'value="Renamed"' in bad.text  # the typed values are kept
    with admin_web.sessions() as session:
        kept = lists.get_list(session, "weekly")
        assert (kept.name, kept.language) == ("Weekly", "ru")
    # without the CSRF token: refused, nothing changed
    del data["csrf_token"]
    assert client.post("/admin/lists/weekly", data={**data, "language": "kk"}).status_code == 403
    with admin_web.sessions() as session:
        assert lists.get_list(session, "weekly").language == "ru"


def test_a_subscribers_language_is_shown_and_changed(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        reader = make_subscriber(session, make_list(session, slug="weekly"), "dana@example.com", "Dana")
        reader_id = reader.id
    client = admin_web.signed_in(Role.admin)
    page = client.get(f"/admin/subscribers/{reader_id}").text
    assert _selected(page, "language") == "" and "Language None: the list's language" in text_of(page)
    saved = client.post(
        f"/admin/subscribers/{reader_id}/language", data={"language": "kk", "csrf_token": csrf_from(page)}
    )
    assert saved.status_code == 303
    page = client.get(f"/admin/subscribers/{reader_id}").text
    assert "Saved the language: Қазақ тілі (kk)." in html.unescape(page) and _selected(page, "language") == "kk"
    with admin_web.sessions() as session:
        assert session.get(Subscriber, reader_id).language == "kk"  # type: ignore[union-attr]
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "subscriber.update")).one()
        assert entry.target == f"subscriber:{reader_id}" and entry.details == {"language": "kk"}


def test_a_bad_subscriber_language_is_refused_beside_the_field_and_nothing_changes(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        reader = make_subscriber(session, None, "oleg@example.com", "Oleg")
        reader.language = "ru"
        reader_id = reader.id
    client = admin_web.signed_in(Role.admin)
    page = client.get(f"/admin/subscribers/{reader_id}").text
    bad = client.post(
        f"/admin/subscribers/{reader_id}/language", data={"language": "tlh", "csrf_token": csrf_from(page)}
    )
    assert bad.status_code == 422
    assert error_of(bad.text, "language") == "language must be one of en, kk, ru, got 'tlh'."
    assert 'aria-invalid="true"' in bad.text
    forged = client.post(f"/admin/subscribers/{reader_id}/language", data={"language": "kk"})
    assert forged.status_code == 403
    with admin_web.sessions() as session:
        assert session.get(Subscriber, reader_id).language == "ru"  # type: ignore[union-attr]
        assert session.scalars(select(AuditEntry).where(AuditEntry.action == "subscriber.update")).all() == []
