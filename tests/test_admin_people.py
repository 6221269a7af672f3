"""The admin's pages for people, both backends: the subscriber search (address and name by their start,
attribute = value, status, list; keyset pages) and its export, a subscriber's page (attributes as JSON,
consent, timeline, the actions and their confirmations), the import wizard (preview, choices, the import
run off the request, the report and its bad lines as CSV), and suppressions and blocked domains."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, import_jobs, subscribers, suppressions
from newsletter.models import (
    BlockedDomain,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    ImportJob,
    ImportStatus,
    Role,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from newsletter.web.api.deps import Jobs, get_jobs
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list, make_subscriber, publish_sample

TAGS = re.compile(r"<[^>]+>")
ROW = re.compile(r'href="/admin/subscribers/\d+"')


def text_of(page: str) -> str:
    return " ".join(html.unescape(TAGS.sub(" ", page)).split())


def error_of(page: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="err-{field}"[^>]*>(.*?)</p>', page, re.S)
    assert match, f"no error slot for {field}"
    return html.unescape(match[1]).strip()


@dataclass
class RecordedImports(Jobs):
    """Import jobs started by the pages, run by the test once the request has answered."""

    started: list[int] = field(default_factory=list)
    confirmations: list[int] = field(default_factory=list)

    def run_import(self, job_id: int, sessions: sessionmaker[Session], *, embedded: bool) -> None:
        self.started.append(job_id)

    def send_import_confirmations(self, list_id: int) -> bool:
        self.confirmations.append(list_id)
        return True


@pytest.fixture
def jobs(admin_web: AdminWeb) -> Iterator[RecordedImports]:
    recording = RecordedImports()
    admin_web.app.dependency_overrides[get_jobs] = lambda: recording
    yield recording
    admin_web.app.dependency_overrides.pop(get_jobs)


# --- subscribers ------------------------------------------------------------------------------------------


def test_search_by_address_name_attribute_status_and_list_pages_by_keyset(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        weekly, other = make_list(session, slug="weekly"), make_list(session, slug="other")
        for i in range(30):
            person = make_subscriber(session, weekly, f"ana{i:02}@example.com", name=f"Ana {i}")
            person.attributes = {"city": "Almaty" if i % 2 else "Astana"}
        make_subscriber(session, other, "bob@example.com", name="Bob Smith")
        make_subscriber(session, weekly, "waiting@example.com", confirmed=False)
    client = admin_web.signed_in(Role.admin)
    first = client.get("/admin/subscribers", params={"email": "ANA"})
    assert first.status_code == 200 and len(ROW.findall(first.text)) == 25
    more = re.search(r'href="/admin/subscribers\?email=ANA&amp;after=(\d+)"', first.text)
    assert more, "a Next link"
    second = client.get("/admin/subscribers", params={"email": "ANA", "after": more[1]})
    assert len(ROW.findall(second.text)) == 5 and "ana29@example.com" in second.text
    assert "ana00@" not in second.text
    assert "bob@example.com" in client.get("/admin/subscribers", params={"name": "bob s"}).text
    almaty = client.get("/admin/subscribers", params={"attribute": "city=Almaty", "list": "weekly"}).text
    assert "ana01@example.com" in almaty and "ana00@example.com" not in almaty
    pending = client.get("/admin/subscribers", params={"status": "pending"}).text
    assert "waiting@example.com" in pending and "ana01@" not in pending
    bad = client.get("/admin/subscribers", params={"attribute": "city"})
    assert bad.status_code == 422 and "name=value" in bad.text
    export = client.get("/admin/subscribers/export", params={"attribute": "city=Almaty"})
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0][:2] == ["email", "name"] and len(rows) == 1 + 15


def campaign_for(admin_web: AdminWeb, email: str) -> int:
    """A campaign to `email`'s list, with the delivery sent, an open, a click and a bounce recorded."""
    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly")
        person = make_subscriber(session, weekly, email, name="Ada")
        campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
        delivery.start(session, admin_web.settings, campaign.id)
        row = session.scalar(select(Delivery).where(Delivery.subscriber_id == person.id))
        assert row is not None
        row.status, row.sent_at = DeliveryStatus.sent, dt.datetime.now(dt.UTC)
        for kind in (EventType.open, EventType.click, EventType.bounce):
            session.add(Event(type=kind, campaign_id=campaign.id, delivery_id=row.id, subscriber_id=person.id,
                              url="https://example.org/story" if kind == EventType.click else None))  # fmt: skip
        return person.id


def test_a_subscribers_page_shows_consent_and_timeline_and_edits_attributes(admin_web: AdminWeb) -> None:
    person_id = campaign_for(admin_web, "ada@example.com")
    client = admin_web.signed_in(Role.admin)
    page = client.get(f"/admin/subscribers/{person_id}")
    shown = text_of(page.text)
    assert page.status_code == 200 and "Subscriptions and consent" in shown
    assert "weekly confirmed admin" in shown and "delivery sent" in shown
    assert "open" in shown and "click" in shown and "https://example.org/story" in shown
    assert "Bounces 1 in the last 30 days" in shown
    token = csrf_from(page.text)
    for bad, message in [("{not json", "JSON is not valid"), ("[1, 2]", "must be an object"),
                         ('{"a": {"deep": 1}}', "only strings, numbers")]:  # fmt: skip
        answer = client.post(
            f"/admin/subscribers/{person_id}/attributes", data={"attributes": bad, "csrf_token": token}
        )
        assert answer.status_code == 422 and message in error_of(answer.text, "attributes"), bad
        assert html.escape(bad, quote=False) in answer.text or bad in html.unescape(answer.text)
    with admin_web.sessions() as session:
        assert subscribers.get_subscriber(session, person_id).attributes == {}
    good = client.post(
        f"/admin/subscribers/{person_id}/attributes", data={"attributes": '{"city": "Almaty"}', "csrf_token": token}
    )
    assert good.status_code == 303
    with admin_web.sessions() as session:
        assert subscribers.get_subscriber(session, person_id).attributes == {"city": "Almaty"}
    export = client.get(f"/admin/subscribers/{person_id}/export.json")
    assert (
        export.json()["subscriber"]["email"] == "ada@example.com"
        and "attachment" in export.headers["content-disposition"]
    )


def test_each_action_names_its_consequence_and_erase_leaves_no_personal_data(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        person_id = make_subscriber(session, make_list(session, slug="weekly"), "ada@example.com", name="Ada").id
    client = admin_web.signed_in(Role.admin)
    block = client.get(f"/admin/subscribers/{person_id}/block")
    assert "they stay on their lists but are never mailed" in text_of(block.text)
    token = csrf_from(block.text)
    assert client.post(f"/admin/subscribers/{person_id}/block", data={"csrf_token": token}).status_code == 303
    with admin_web.sessions() as session:
        assert subscribers.get_subscriber(session, person_id).status == SubscriberStatus.blocklisted
    client.post(f"/admin/subscribers/{person_id}/unblock", data={"csrf_token": token})
    erase = client.get(f"/admin/subscribers/{person_id}/erase")
    assert "Erase ada@example.com: their personal data is replaced, their address can never be mailed again" in text_of(
        erase.text
    )
    assert client.post(f"/admin/subscribers/{person_id}/erase", data={"csrf_token": token}).status_code == 303
    with admin_web.sessions() as session:
        erased = session.get(Subscriber, person_id)
        assert erased is not None and erased.email.endswith("@erased.invalid") and erased.name == ""
        assert suppressions.is_suppressed(session, "ada@example.com")
    assert "ada@example.com" not in client.get("/admin/subscribers", params={"email": "ada"}).text


# --- the import wizard --------------------------------------------------------------------------------------


def wizard_csv(good: int, bad: int) -> bytes:
    lines = ["email;name;city"] + [f"reader{i}@example.com;Reader {i};Almaty" for i in range(good)]
    lines[5:5] = [f"not-an-address-{i};Broken {i};=cmd" for i in range(bad)]
    return ("\n".join(lines) + "\n").encode()


def test_the_wizard_previews_imports_in_the_background_and_reports_every_bad_line(
    admin_web: AdminWeb, jobs: RecordedImports
) -> None:
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly", name="Weekly")
    client = admin_web.signed_in(Role.admin)
    token = csrf_from(client.get("/admin/imports").text)
    upload = client.post(
        "/admin/imports", data={"csrf_token": token}, files={"file": ("people.csv", wizard_csv(1000, 10), "text/csv")}
    )
    assert upload.status_code == 303
    job_url = upload.headers["location"]
    preview = client.get(job_url)
    shown = text_of(preview.text)
    assert "Separated by a semicolon" in shown and "These become attributes: city" in shown
    assert "reader0@example.com" in shown
    missing = client.post(job_url + "/run", data={"csrf_token": token, "list": ""})
    assert missing.status_code == 422 and "Choose the list" in error_of(missing.text, "list")
    assert jobs.started == []
    started = client.post(job_url + "/run", data={"csrf_token": token, "list": "weekly", "consent": "double"})
    assert started.status_code == 303 and len(jobs.started) == 1  # queued, not run in the request
    job_id = jobs.started[0]
    with admin_web.sessions() as session:
        assert session.get(ImportJob, job_id).status == ImportStatus.queued  # type: ignore[union-attr]
    running = client.get(job_url)
    assert f'hx-get="/admin/imports/{job_id}/progress"' in running.text and "Reload" in running.text
    import_jobs.run(admin_web.sessions, job_id)
    poll = client.get(f"/admin/imports/{job_id}/progress")
    assert poll.headers.get("HX-Refresh") == "true" and "hx-get" not in poll.text  # the poll stops
    report = text_of(client.get(job_url).text)
    assert "Imported 1,000" in report and "Bad lines 10" in report
    bad_lines = list(csv.reader(io.StringIO(client.get(f"/admin/imports/{job_id}/errors.csv").text)))
    assert bad_lines[0] == ["line", "reason", "content"] and len(bad_lines) == 11
    assert bad_lines[1][0] == "6" and "not-an-address-0" in bad_lines[1][2]
    assert all(not row[2].startswith(("=", "+", "-", "@")) for row in bad_lines[1:])
    assert "people.csv" in client.get("/admin/imports").text
    with admin_web.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 1000


def test_a_file_without_an_email_column_is_refused_at_upload(admin_web: AdminWeb, jobs: RecordedImports) -> None:
    client = admin_web.signed_in(Role.admin)
    token = csrf_from(client.get("/admin/imports").text)
    answer = client.post(
        "/admin/imports", data={"csrf_token": token}, files={"file": ("x.csv", b"name,city\nA,B\n", "text/csv")}
    )
    assert answer.status_code == 422 and "no 'email' column" in error_of(answer.text, "file")
    with admin_web.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ImportJob)) == 0


# --- suppressions and blocked domains ---------------------------------------------------------------------


def test_suppressions_add_one_a_list_and_a_file_and_remove_with_a_reason(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    page = client.get("/admin/suppressions")
    token = csrf_from(page.text)
    assert "No suppressed addresses" in page.text
    bad = client.post("/admin/suppressions/add", data={"csrf_token": token, "addresses": "not-an-address"})
    assert bad.status_code == 422 and "@-sign" in error_of(bad.text, "addresses")
    client.post(
        "/admin/suppressions/add", data={"csrf_token": token, "addresses": "one@example.com", "note": "asked by phone"}
    )
    pasted = client.post(
        "/admin/suppressions/add",
        data={"csrf_token": token, "addresses": "two@example.com\nthree@example.com, one@example.com"},
    )
    assert pasted.status_code == 303
    client.post(
        "/admin/suppressions/import",
        data={"csrf_token": token},
        files={"file": ("s.csv", b"email\nfour@example.com\n", "text/csv")},
    )
    listing = text_of(client.get("/admin/suppressions").text)
    assert "one@example.com manual added by admin-user: asked by phone" in listing
    with admin_web.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 4
    no_reason = client.post(
        "/admin/suppressions/remove", data={"csrf_token": token, "email": "one@example.com", "reason": ""}
    )
    assert no_reason.status_code == 422 and "Say why" in error_of(no_reason.text, "reason")
    removed = client.post(
        "/admin/suppressions/remove",
        data={"csrf_token": token, "email": "one@example.com", "reason": "resubscribed in person"},
    )
    assert removed.status_code == 303
    with admin_web.sessions() as session:
        assert not suppressions.is_suppressed(session, "one@example.com")


def test_a_blocked_domain_is_listed_with_why_and_refused_when_bad(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    token = csrf_from(client.get("/admin/suppressions").text)
    bad = client.post("/admin/suppressions/domains", data={"csrf_token": token, "domain": "not a domain"})
    assert bad.status_code == 422 and "not a mail domain" in error_of(bad.text, "domain")
    client.post(
        "/admin/suppressions/domains", data={"csrf_token": token, "domain": "*@Mailinator.com", "note": "throwaway"}
    )
    assert "mailinator.com added by admin-user: throwaway" in text_of(client.get("/admin/suppressions").text)
    unblock = client.post(
        "/admin/suppressions/domains/remove",
        data={"csrf_token": token, "domain": "mailinator.com", "reason": "a partner uses it"},
    )
    assert unblock.status_code == 303
    with admin_web.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BlockedDomain)) == 0
