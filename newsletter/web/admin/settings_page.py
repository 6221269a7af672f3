"""/admin/settings (admins): the SMTP pool with a "test connection" button per server (never its
password), the DKIM record to publish and what DNS says, the queue and the schedulers seen, the database
and broker state, the version. Read-only: settings come from NEWSLETTER_* variables."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter import audit, dkim, health
from newsletter.config import Settings
from newsletter.smtpservers import SmtpServer, parse_smtp_urls
from newsletter.web.admin.auth import Admin, SignedIn, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import render
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
SETTINGS = "/admin/settings"


def _servers(settings: Settings) -> list[SmtpServer]:
    return parse_smtp_urls(settings.smtp_url) if settings.smtp_url else []


def _page(
    request: Request, session: Session, settings: Settings, me: SignedIn, *, tested: dict[int, health.SmtpCheck]
) -> Response:
    try:
        record, dkim_error = health.dkim_record(settings), None
    except dkim.DkimKeyError as exc:
        record, dkim_error = None, str(exc)
    broker, depths = health.broker_state(settings)
    return render(
        request,
        "settings.html",
        title="Settings and health",
        servers=list(enumerate(_servers(settings))),
        tested=tested,
        outbox=str(settings.outbox_dir),
        dkim=record,
        dkim_error=dkim_error,
        dkim_on=bool(settings.dkim_domain),
        services=[health.database_state(session), broker],
        depths=depths,
        schedulers=health.schedulers(session),
        version=health.version(),
        environment=settings.environment,
        base_url=settings.base_url,
    )


@router.get(SETTINGS)
def settings_page(request: Request, session: SessionDep, settings: SettingsDep, me: Admin) -> Response:
    return _page(request, session, settings, me, tested={})


@router.post(SETTINGS + "/smtp/{index}/test")
def test_connection(
    request: Request, session: SessionDep, settings: SettingsDep, me: Admin, index: Annotated[int, Path(ge=0, le=99)]
) -> Response:
    # A plain function: FastAPI runs it in a worker thread, so the blocking SMTP check holds no event loop.
    servers = _servers(settings)
    if index >= len(servers):
        return _page(request, session, settings, me, tested={})
    check = health.check_smtp(servers[index])
    audit.record(session, actor(request, me), "settings.smtp_test", f"smtp:{servers[index].display}", ok=check.ok)
    return _page(request, session, settings, me, tested={index: check})
