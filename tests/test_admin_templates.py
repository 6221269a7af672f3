"""/admin/templates: upload (file or text) with the render error and its line, preview on a digest in the
sandboxed frame, a list's default template used by its campaigns."""

from __future__ import annotations

from sqlalchemy import func, select

from newsletter import delivery
from newsletter.models import AuditEntry, Campaign, MailingList, Role, Template
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list, make_subscribers, publish_sample
from tests.test_templates import mjml


def counts(web: AdminWeb) -> tuple[int, int, list[int | None]]:
    with web.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Template)) or 0,
            session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action != "sign_in.ok")) or 0,
            list(session.scalars(select(MailingList.default_template_id).order_by(MailingList.id))),
        )


def test_upload_errors_preview_and_list_default(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly", name="Weekly")
        make_subscribers(session, weekly, 1)
        digest = publish_sample(session).slug
    boss = admin_web.signed_in(Role.admin, name="boss")
    page = boss.get("/admin/templates")
    assert page.status_code == 200 and "No custom templates yet" in page.text
    token = csrf_from(page.text)
    broken = mjml("{% for item in sections %}\n{{ item.name }\n{% endfor %}")
    bad = boss.post("/admin/templates", data={"csrf_token": token, "name": "dark", "source": broken})
    assert bad.status_code == 422 and ": line 3: " in bad.text and "syntax error" in bad.text
    assert "{% for item in sections %}" in bad.text  # the source is kept to fix it
    named = boss.post("/admin/templates", data={"csrf_token": token, "name": "Dark Mode", "source": mjml("x")})
    assert named.status_code == 422 and "use lowercase letters" in named.text
    assert counts(admin_web) == (0, 0, [None])
    good = mjml("<p>Marker of the dark template: {{ digest.title }}</p>")
    saved = boss.post(
        "/admin/templates", data={"csrf_token": token, "name": "dark"},
        files={"file": ("dark.mjml", good.encode(), "text/plain")},
    )  # fmt: skip
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/templates/dark"
    shown = boss.get("/admin/templates/dark").text
    assert f'src="/admin/templates/dark/preview?digest={digest}"' in shown and 'sandbox=""' in shown
    frame = boss.get(f"/admin/templates/dark/preview?digest={digest}")
    assert "Marker of the dark template" in frame.text and "sandbox" in frame.headers["content-security-policy"]
    assert boss.post("/admin/templates/defaults", data={"list": "weekly", "template": "dark"}).status_code == 403
    assert counts(admin_web)[2] == [None]
    chosen = boss.post("/admin/templates/defaults", data={"csrf_token": token, "list": "weekly", "template": "dark"})
    assert "Campaigns to Weekly use template dark" in boss.get(chosen.headers["location"]).text
    with admin_web.sessions.begin() as session:
        campaign = delivery.create_campaign(session, digest_slug=digest, list_slugs=["weekly"])
        dark = session.scalars(select(Template)).one()
        assert campaign.template_id == dark.id
    assert "Default of</dt><dd>weekly" in boss.get("/admin/templates/dark").text
    with admin_web.sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions[-2:] == ["template.save", "list.update"]
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1
    assert boss.post("/admin/templates", data={"name": "x", "source": good}).status_code == 403
    assert counts(admin_web)[0] == 1
