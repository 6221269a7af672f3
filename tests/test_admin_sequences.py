"""The sequence pages on both backends: admins set a sequence up with CSRF-checked forms, editors read it
and get 403 on every write, bad steps are refused beside the field with nothing changed."""

from __future__ import annotations

from typing import Any

from newsletter import sequences
from newsletter.models import Role
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list

BASE = "/admin/sequences"


def setup_list(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly", name="The Weekly")


def stored(admin_web: AdminWeb) -> list[Any]:
    with admin_web.sessions() as session:
        try:
            sequence = sequences.get_sequence(session, "weekly")
        except sequences.SequenceNotFound:
            return []
        return [sequence.enabled, *[(s.position, s.subject, s.delay_hours, s.body) for s in sequence.steps]]


def test_an_admin_sets_up_a_sequence_and_sees_its_preview(admin_web: AdminWeb) -> None:
    setup_list(admin_web)
    client = admin_web.signed_in(Role.admin)
    page = client.get(BASE)
    assert page.status_code == 200 and "Create a sequence for The Weekly" in page.text
    assert 'href="/admin/sequences"' in page.text  # the navigation entry
    token = csrf_from(page.text)

    assert client.post(f"{BASE}/new", data={"list": "weekly"}).status_code == 403  # no CSRF token: nothing
    assert stored(admin_web) == []
    created = client.post(f"{BASE}/new", data={"list": "weekly", "csrf_token": token})
    assert created.status_code == 303 and created.headers["location"].endswith(f"{BASE}/weekly")
    page = client.get(f"{BASE}/weekly")
    assert "No steps yet" in page.text and "Add the welcome email" in page.text

    step = {"subject": "Welcome", "delay": "0", "body": "Glad **you** are here.", "csrf_token": token}
    assert client.post(f"{BASE}/weekly/steps", data=step).status_code == 303
    assert client.post(f"{BASE}/weekly/steps", data=step | {"subject": "Week one", "delay": "7d"}).status_code == 303
    refused = client.post(f"{BASE}/weekly/steps", data=step | {"delay": "soon"})
    assert refused.status_code == 422 and "not a delay" in refused.text and 'value="soon"' in refused.text
    assert client.post(f"{BASE}/weekly/enable", data={"csrf_token": token}).status_code == 303
    assert stored(admin_web) == [True, (1, "Welcome", 0, step["body"]), (2, "Week one", 168, step["body"])]

    page = client.get(f"{BASE}/weekly?step=1")
    assert 'iframe sandbox=""' in page.text and f"{BASE}/weekly/steps/1/preview" in page.text
    frame = client.get(f"{BASE}/weekly/steps/1/preview")
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "<strong>you</strong>" in frame.text and "Hello Ada," in frame.text

    edited = client.post(f"{BASE}/weekly/steps/2", data=step | {"subject": "Week 1", "delay": "6d"})
    assert edited.status_code == 303
    assert client.post(f"{BASE}/weekly/steps/2/move", data={"to": "1", "csrf_token": token}).status_code == 303
    assert client.post(f"{BASE}/weekly/steps/2/remove", data={"csrf_token": token}).status_code == 303
    assert client.post(f"{BASE}/weekly/disable", data={"csrf_token": token}).status_code == 303
    assert stored(admin_web) == [False, (1, "Week 1", 144, step["body"])]


def test_editors_read_sequences_and_get_403_on_every_write(admin_web: AdminWeb) -> None:
    setup_list(admin_web)
    with admin_web.sessions.begin() as session:
        sequences.create_sequence(session, "weekly")
        sequences.add_step(session, admin_web.settings, "weekly", subject="Welcome", body="Hello.")
    before = stored(admin_web)
    editor = admin_web.signed_in(Role.editor)
    page = editor.get(f"{BASE}/weekly/steps/1")
    assert page.status_code == 200 and "Only admins change sequences." in page.text
    token = csrf_from(page.text)
    writes = [
        ("/new", {"list": "weekly"}),
        ("/weekly/enable", {}),
        ("/weekly/disable", {}),
        ("/weekly/steps", {"subject": "x", "delay": "0", "body": "y"}),
        ("/weekly/steps/1", {"subject": "x", "delay": "0", "body": "y"}),
        ("/weekly/steps/1/move", {"to": "1"}),
        ("/weekly/steps/1/remove", {}),
    ]
    for path, data in writes:
        assert editor.post(BASE + path, data=data | {"csrf_token": token}).status_code == 403, path
    assert stored(admin_web) == before
    anonymous = admin_web.client.get(f"{BASE}/weekly")
    assert anonymous.status_code == 303 and "/admin/sign-in" in anonymous.headers["location"]
    assert editor.get(f"{BASE}/nosuchlist").status_code == 404
