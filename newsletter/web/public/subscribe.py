"""The subscribe form, and its variant for embedding in another site.

Embedding the subscribe form elsewhere: `POST /subscribe/{list}` with a form-encoded body and
`Accept: application/json` (a CORS "simple request", no preflight), or with a JSON body
`{"email": ..., "name": ..., "attributes": {...}}`, answers JSON: 200 `{"status": "ok", "message": ...}`,
400 `{"error": ..., "field": "email"}` or 429. Cross-origin callers must be listed in the list's
`cors_origins` (`"*"` allows any site).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from newsletter import i18n, links, subscriptions
from newsletter.config import Settings
from newsletter.errors import Invalid
from newsletter.lists import ListNotFound
from newsletter.models import MailingList, OptIn
from newsletter.subscriptions import InvalidAttribute, ListNotSubscribable
from newsletter.web.deps import SessionDep
from newsletter.web.pages import (
    UnreadableForm,
    client_ip,
    form_fields,
    list_context,
    message,
    not_found,
    pages,
    read_body,
    unreadable_form,
)
from newsletter.web.public import schema
from newsletter.web.public.archive import archived_digests
from newsletter.web.throttle import Throttle

log = logging.getLogger(__name__)
router = APIRouter()
PATH = f"{links.SUBSCRIBE}{{slug}}"
NO_SUCH_LIST = i18n.N_("There is no such newsletter")


def enqueue_confirmation(subscription_id: int) -> None:
    """Default `app.state.enqueue_confirmation`: the Celery task (run inline in embedded mode)."""
    from worker import tasks

    try:
        tasks.send_confirmation.delay(subscription_id)
    except Exception:  # the subscription is committed; the person can ask again, the error is logged
        log.exception("could not send or enqueue the confirmation email of subscription %s", subscription_id)


def enqueue_sequences(subscription_id: int) -> None:
    """Default `app.state.enqueue_sequences`: a confirmed subscription's due sequence steps (its welcome
    email) planned and sent at once, not at the next sweep (run inline in embedded mode)."""
    from worker import tasks

    try:
        tasks.start_sequences.delay(subscription_id)
    except Exception:  # the sweep plans it anyway; the error is logged
        log.exception("could not plan the sequence steps of subscription %s", subscription_id)


def start_committed_sequences(request: Request) -> None:
    """A BackgroundTask: the sequence of the subscription this request confirmed, once that committed."""
    subscription_id = getattr(request.state, "committed_sequence", None)
    if subscription_id is not None:
        request.app.state.enqueue_sequences(subscription_id)


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the request's unit of work has committed (tasks must see committed rows)."""
    event.listen(session, "after_commit", lambda _session: callback(), once=True)


def _public_list(session: Session, slug: str) -> MailingList | None:
    try:
        return subscriptions.get_public_list(session, slug)
    except (ListNotFound, ListNotSubscribable):
        return None


def _field_specs(mailing_list: MailingList) -> list[dict[str, Any]]:
    specs = []
    for field in mailing_list.form_fields or []:
        name = str(field.get("name", "")).strip()
        if name:
            specs.append(
                {"name": name, "label": str(field.get("label") or name), "required": bool(field.get("required"))}
            )
    return specs


def _subscribe_page(
    request: Request,
    session: Session,
    mailing_list: MailingList,
    *,
    error: Invalid | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    """The form, or the form again with what was typed and why it was refused, in the page's language."""
    context = list_context(mailing_list, request)
    translations = i18n.translations(context["lang"])
    recent = archived_digests(session, 5, list_id=mailing_list.id)
    return pages(request).render(
        "subscribe.html",
        status_code=400 if error else 200,
        title=translations.gettext("Subscribe to %(list)s") % {"list": mailing_list.name},
        mailing_list=mailing_list,
        fields=_field_specs(mailing_list),
        double_opt_in=mailing_list.opt_in == "double",
        error=error.translated(translations.gettext) if error else None,
        error_field=getattr(error, "field", "email"),
        values=values or {},
        robots="index",
        latest=recent[0] if recent else None,
        cadence=cadence(translations, [digest.date for digest in recent]),
        languages=[(code, i18n.language_name(code)) for code in i18n.available()],
        **context,
    )


def cadence(translations: i18n.NullTranslations, dates: list[dt.date]) -> str:
    """How often issues come, from the gaps between the latest ones: "About one issue a week"."""
    if len(dates) < 2:
        return ""
    gaps = sorted((newer - older).days for newer, older in itertools.pairwise(dates))
    days = max(1, gaps[len(gaps) // 2])
    if days <= 1:
        return translations.gettext("A new issue every day.")
    if 6 <= days <= 8:
        return translations.gettext("About one issue a week.")
    if 28 <= days <= 31:
        return translations.gettext("About one issue a month.")
    return translations.ngettext("About one issue every %(num)d day.", "About one issue every %(num)d days.", days) % {
        "num": days
    }


@router.get(PATH, response_model=None, responses=schema.page({200: schema.answer("The subscribe form", schema.HTML)}))
def subscribe_form(slug: str, request: Request, session: SessionDep) -> Response:
    mailing_list = _public_list(session, slug)
    if mailing_list is None:
        return not_found(request, session, NO_SUCH_LIST)
    return _subscribe_page(request, session, mailing_list)


def _cors_headers(request: Request, mailing_list: MailingList | None) -> dict[str, str]:
    origin = request.headers.get("origin")
    allowed = (mailing_list.cors_origins or []) if mailing_list is not None else []
    if origin and (origin in allowed or "*" in allowed):
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


@router.options(PATH, include_in_schema=False)
def subscribe_preflight(slug: str, request: Request, session: SessionDep) -> Response:
    headers = _cors_headers(request, _public_list(session, slug))
    if "Access-Control-Allow-Origin" in headers:
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type, Accept",
                "Access-Control-Max-Age": "86400",
            }
        )
    return Response(status_code=204, headers=headers)


def _done_message(mailing_list: MailingList) -> tuple[str, str]:
    # Identical for new, pending, confirmed, suppressed and blocked addresses: no enumeration.
    if mailing_list.opt_in == "double":
        return (
            i18n.N_("Check your inbox"),
            i18n.N_(
                "If this address can receive our email, a message with a confirmation link is on its way. "
                "Open it to start receiving %(list)s. Nothing arrived? Look in your spam folder; you can ask "
                "again tomorrow."
            ),
        )
    return (
        i18n.N_("Thank you"),
        i18n.N_("This address will receive %(list)s. Every email has an unsubscribe link."),
    )


def _submitted_values(body: bytes, is_json: bool) -> dict[str, str]:
    """The form's fields, or a JSON body's with its `attributes` as `attr.NAME` (as the form names them)."""
    if not is_json:
        return {key: items[0] for key, items in form_fields(body).items()}
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise unreadable_form("the body is not JSON") from None
    if not isinstance(data, dict):
        return {}
    values = {k: str(v) for k, v in data.items() if isinstance(v, str | int | float)}
    attributes = data.get("attributes")
    if isinstance(attributes, dict):
        values.update({f"attr.{k}": str(v) for k, v in attributes.items() if isinstance(v, str)})
    return values


@router.post(PATH, response_model=None, responses=schema.SUBSCRIBE_ANSWERS, openapi_extra=schema.SUBSCRIBE_BODY)
async def subscribe(slug: str, request: Request, session: SessionDep) -> Response:
    """The form (HTML answer) and its embeddable JSON variant; see the module docstring."""
    is_json = request.headers.get("content-type", "").startswith("application/json")
    wants_json = is_json or "application/json" in request.headers.get("accept", "")
    unreadable: UnreadableForm | None = None
    try:
        values = _submitted_values(await read_body(request), is_json)
    except UnreadableForm as exc:  # refused once the throttle has counted the attempt
        values, unreadable = {}, exc
    response = await run_in_threadpool(_subscribe, request, session, slug, values, wants_json, unreadable)
    # The confirmation email goes out after the answer (issue 11, item 10): sent before it, in embedded
    # mode, it made a new address answer measurably slower than a known one.
    response.background = BackgroundTask(_send_committed_confirmation, request)
    return response


def _send_committed_confirmation(request: Request) -> None:
    subscription_id = getattr(request.state, "committed_confirmation", None)
    if subscription_id is not None:
        request.app.state.enqueue_confirmation(subscription_id)
    start_committed_sequences(request)


def _subscribe(
    request: Request,
    session: Session,
    slug: str,
    values: dict[str, str],
    wants_json: bool,
    unreadable: UnreadableForm | None = None,
) -> Response:
    mailing_list = _public_list(session, slug)
    cors = _cors_headers(request, mailing_list)
    if mailing_list is None:
        if wants_json:
            return JSONResponse({"error": "there is no such newsletter"}, 404, headers=cors)
        return not_found(request, session, NO_SUCH_LIST)
    throttle: Throttle = request.app.state.subscribe_throttle
    context = list_context(mailing_list, request)
    if not throttle.allow(client_ip(request) or "unknown"):
        return _too_many_attempts(request, context, cors, wants_json)
    title, done = _done_message(mailing_list)
    if values.get("website"):
        # The honeypot: a person never sees the field, a bot fills it. It gets the usual answer, nothing else.
        log.info("subscribe honeypot hit for list %s from %s", slug, client_ip(request))
    else:
        refused = _record_subscription(request, session, mailing_list, values, cors, wants_json, unreadable)
        if refused is not None:
            return refused
    values_ = {"list": mailing_list.name}
    if wants_json:
        done_text = i18n.translations(context["lang"]).gettext(done) % values_
        return JSONResponse({"status": "ok", "message": done_text}, headers=cors)
    return message(request, title, done, values=values_, **context)


def _too_many_attempts(request: Request, context: dict[str, Any], cors: dict[str, str], wants_json: bool) -> Response:
    explanation = i18n.N_("Too many attempts from your network. Please try again in an hour.")
    headers = {**cors, "Retry-After": "3600"}
    if wants_json:
        return JSONResponse({"error": i18n.translations(context["lang"]).gettext(explanation)}, 429, headers=headers)
    response = message(request, i18n.N_("Please try again later"), explanation, status_code=429, **context)
    response.headers.update(headers)
    return response


def _record_subscription(
    request: Request,
    session: Session,
    mailing_list: MailingList,
    values: dict[str, str],
    cors: dict[str, str],
    wants_json: bool,
    unreadable: UnreadableForm | None = None,
) -> Response | None:
    """Subscribe the submitted address (sending the confirmation after commit); the answer if refused, in
    the page's language (the embeddable JSON's `error` too: the embedding page shows it to the reader)."""
    settings: Settings = request.app.state.settings
    attributes = subscriptions.form_attributes(
        mailing_list, {k.removeprefix("attr."): v for k, v in values.items() if k.startswith("attr.")}
    )
    missing = [f["label"] for f in _field_specs(mailing_list) if f["required"] and f["name"] not in attributes]
    try:
        if unreadable is not None:
            raise unreadable
        if missing:
            raise InvalidAttribute.translatable(i18n.N_("please also fill in: %(fields)s"), fields=", ".join(missing))
        result = subscriptions.subscribe(
            session,
            mailing_list,
            values.get("email", ""),
            name=values.get("name", ""),
            attributes=attributes,
            ip=client_ip(request),
            resend_hours=settings.confirm_resend_hours,
            language=values.get("language") or None,
        )
    except Invalid as exc:  # the address, the name, an extra field, the language or the form itself
        session.rollback()
        if wants_json:
            gettext = i18n.translations(list_context(mailing_list, request)["lang"]).gettext
            error = {"error": exc.translated(gettext), "field": getattr(exc, "field", "email")}
            return JSONResponse(error, 400, headers=cors)
        return _subscribe_page(request, session, mailing_list, error=exc, values=values)
    if result.send_confirmation and result.subscription_id is not None:
        # sent only once the unit of work committed (the task must see the row), after the answer
        subscription_id = result.subscription_id
        on_commit(session, lambda: setattr(request.state, "committed_confirmation", subscription_id))
    if mailing_list.opt_in == OptIn.single and result.subscription_id is not None:
        # consent now: the welcome step goes out without waiting for the sweep (planning twice adds nothing)
        confirmed_id = result.subscription_id
        on_commit(session, lambda: setattr(request.state, "committed_sequence", confirmed_id))
    return None
