"""/admin/bounces: reports by mail and by a provider's webhook, the row they matched, what was done."""

from __future__ import annotations

import re

from newsletter import bounces, providers
from newsletter.models import Role
from newsletter.providers import inbox
from tests.admin import AdminWeb
from tests.test_bounces import ARF, postfix_dsn, send_sample


def test_reports_with_source_match_and_outcome_paged(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    empty = boss.get("/admin/bounces")
    assert empty.status_code == 200 and "No bounce or complaint reports yet" in empty.text
    with admin_web.sessions() as session:
        sent = send_sample(admin_web.sessions, session, admin_web.settings)
        r1, r2, r3 = sent["r1@example.com"], sent["r2@example.com"], sent["r3@example.com"]
        bounces.ingest(session, admin_web.settings, postfix_dsn(r1.message_id or "", "r1@example.com"))
        bounces.ingest(session, admin_web.settings, ARF.format(message_id=r2.message_id, final="x").encode())
        soft = providers.ProviderEvent("soft_bounce", "r3@example.com", message_id=r3.message_id, status="4.2.2")
        providers.record(session, admin_web.settings, [soft], source="postmark")
        session.commit()
        campaign, subscriber = r1.campaign_id, r1.subscriber_id
    page = boss.get("/admin/bounces").text
    rows = re.findall(r"<tr>\s*<td>[^<]+</td>\s*<td><span[^>]*>(\w+)</span></td>\s*<td[^>]*>([^<]+)</td>", page)
    assert rows == [("bounce", "Postmark"), ("complaint", "bounce mail"), ("bounce", "bounce mail")]
    assert f'href="/admin/subscribers/{subscriber}">r1@example.com</a>' in page
    assert f'href="/admin/campaigns/{campaign}"' in page and "delivery now failed" in page
    assert "<strong>suppressed</strong> (hard bounce)" in page and "<strong>suppressed</strong> (complaint)" in page
    assert "recorded; the address is still mailed" in page  # the soft bounce
    complaints = boss.get("/admin/bounces?kind=complaint").text
    assert complaints.count("<strong>suppressed</strong>") == 1 and "Postmark" not in complaints
    first = boss.get("/admin/bounces?before=999999999").text
    assert first.count("<tr>") == page.count("<tr>") and "← Newest" in first
    with_older = bounces.recent(admin_web.sessions(), limit=2)
    rest = bounces.recent(admin_web.sessions(), before_id=with_older[-1].event_id, limit=2)
    assert [r.kind for r in with_older + rest] == ["bounce", "complaint", "bounce"]
    assert boss.get("/admin/bounces?kind=open").status_code == 200  # not a report kind: all reports


def test_provider_events_waiting_to_be_applied_are_counted(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    assert "waiting to be applied" not in boss.get("/admin/bounces").text
    with admin_web.sessions() as session:
        sent = send_sample(admin_web.sessions, session, admin_web.settings)
        events = [
            providers.ProviderEvent("hard_bounce", address, message_id=sent[address].message_id, event_id=address)
            for address in ("r1@example.com", "r2@example.com")
        ]
        assert inbox.accept(session, "postmark", events) == 2
        session.commit()
    assert "2 provider events received\n  and waiting to be applied" in boss.get("/admin/bounces").text
    with admin_web.sessions() as session:
        assert [p.outcome.result for p in inbox.process(session, admin_web.settings)] == ["suppressed", "suppressed"]
        session.commit()
    page = boss.get("/admin/bounces").text
    assert "waiting to be applied" not in page and page.count("<strong>suppressed</strong> (hard bounce)") == 2
