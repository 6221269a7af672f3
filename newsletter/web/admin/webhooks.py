"""/admin/webhooks: outgoing webhook endpoints (admins only) — register one, its delivery log with
redelivery, enable/disable, a new secret, delete. The same domain functions as the CLI and the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter.errors import Conflict, Invalid
from newsletter.models import WebhookEndpoint
from newsletter.outbox import EVENT_TYPES
from newsletter.web.admin.auth import Admin
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.api.params import MAX_ID, RowId
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.webhooks import dispatch, endpoints
from newsletter.webhooks.destinations import MAX_URL_LENGTH

router = APIRouter(route_class=AdminRoute)
WEBHOOKS = "/admin/webhooks"
LOG_PAGE = 50


def _list(
    request: Request, session: Session, *, errors: dict[str, str] | None = None, form: dict[str, object] | None = None
) -> Response:
    return render(
        request,
        "webhooks/list.html",
        title="Webhooks",
        endpoints=endpoints.all_endpoints(session),
        event_types=EVENT_TYPES,
        errors=errors or {},
        form=form or {"url": "", "events": [], "description": ""},
        status_code=422 if errors else 200,
    )


def _endpoint_page(
    request: Request, session: Session, endpoint: WebhookEndpoint, *, before: int | None = None, secret: str = ""
) -> Response:
    rows = dispatch.log_of(session, endpoint.id, before=before, limit=LOG_PAGE)
    return render(
        request,
        "webhooks/endpoint.html",
        title=endpoint.url,
        endpoint=endpoint,
        deliveries=rows,
        message_id=dispatch.message_id,
        older=rows[-1].id if len(rows) == LOG_PAGE else None,
        secret=secret,
        status_code=201 if secret else 200,
    )


def _sentence(error: Exception) -> str:
    text = str(error)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@router.get(WEBHOOKS)
def webhook_list(request: Request, session: SessionDep, me: Admin) -> Response:
    return _list(request, session)


@router.post(WEBHOOKS)
def webhook_create(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: Admin,
    url: Annotated[str, Form(max_length=MAX_URL_LENGTH)] = "",
    events: Annotated[list[str] | None, Form(max_length=len(EVENT_TYPES))] = None,
    description: Annotated[str, Form(max_length=endpoints.MAX_DESCRIPTION)] = "",
) -> Response:
    chosen = events or []
    form: dict[str, object] = {"url": url, "events": chosen, "description": description}
    try:
        endpoint = endpoints.create(session, settings, url, chosen, description=description)
    except endpoints.InvalidEventTypes as exc:  # refused before anything was added: nothing to undo
        return _list(request, session, errors={"events": _sentence(exc)}, form=form)
    except Invalid as exc:
        return _list(request, session, errors={"url": _sentence(exc)}, form=form)
    # the secret is shown on this answer only (never put in a cookie or a URL)
    return _endpoint_page(request, session, endpoint, secret=endpoint.secret)


@router.get(WEBHOOKS + "/{endpoint_id}")
def webhook_page(
    request: Request,
    session: SessionDep,
    me: Admin,
    endpoint_id: RowId,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    return _endpoint_page(request, session, endpoints.get(session, endpoint_id), before=before)


@router.post(WEBHOOKS + "/{endpoint_id}/enable")
def webhook_enable(request: Request, session: SessionDep, me: Admin, endpoint_id: RowId) -> Response:
    endpoints.enable(session, endpoint_id)
    return redirect(request, f"{WEBHOOKS}/{endpoint_id}", flash="Enabled: deliveries waiting for it go out now.")


@router.post(WEBHOOKS + "/{endpoint_id}/disable")
def webhook_disable(request: Request, session: SessionDep, me: Admin, endpoint_id: RowId) -> Response:
    try:
        endpoints.disable(session, endpoint_id, f"disabled by {me.name}")
    except Conflict as exc:
        return redirect(request, f"{WEBHOOKS}/{endpoint_id}", flash=str(exc), kind="error")
    return redirect(request, f"{WEBHOOKS}/{endpoint_id}", flash="Disabled: it gets no events until enabled.")


@router.post(WEBHOOKS + "/{endpoint_id}/rotate-secret")
def webhook_rotate_secret(request: Request, session: SessionDep, me: Admin, endpoint_id: RowId) -> Response:
    endpoint = endpoints.rotate_secret(session, endpoint_id)
    return _endpoint_page(request, session, endpoint, secret=endpoint.secret)


@router.get(WEBHOOKS + "/{endpoint_id}/delete")
def webhook_delete_page(request: Request, session: SessionDep, me: Admin, endpoint_id: RowId) -> Response:
    return render(
        request, "webhooks/delete.html", title="Delete a webhook", endpoint=endpoints.get(session, endpoint_id)
    )


@router.post(WEBHOOKS + "/{endpoint_id}/delete")
def webhook_delete(request: Request, session: SessionDep, me: Admin, endpoint_id: RowId) -> Response:
    url = endpoints.get(session, endpoint_id).url
    endpoints.delete(session, endpoint_id)
    return redirect(request, WEBHOOKS, flash=f"Deleted the webhook to {url} and its delivery log.")


@router.post(WEBHOOKS + "/deliveries/{delivery_id}/redeliver")
def webhook_redeliver(request: Request, session: SessionDep, me: Admin, delivery_id: RowId) -> Response:
    original = dispatch.get_delivery(session, delivery_id)
    back = f"{WEBHOOKS}/{original.endpoint_id}"
    try:
        again = dispatch.redeliver(session, delivery_id)
    except Conflict as exc:
        return redirect(request, back, flash=str(exc), kind="error")
    return redirect(
        request,
        back,
        flash=f"Event {dispatch.message_id(again.event_id)} is being sent again (attempt {again.attempt}).",
    )
