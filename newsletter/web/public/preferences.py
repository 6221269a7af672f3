"""The preferences page: which lists and sections, the name we greet with, or unsubscribe from everything."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter import i18n, links, subscriptions
from newsletter.errors import Invalid, NewsletterError
from newsletter.tokens import Tokens, UnknownToken
from newsletter.web.deps import SessionDep, TokensDep
from newsletter.web.pages import (
    UnreadableForm,
    client_ip,
    form_fields,
    list_context,
    masked,
    not_found,
    pages,
    read_body,
    site_context,
)
from newsletter.web.public import schema

router = APIRouter()
PATH = f"{links.PREFERENCES}{{token}}"


def _preferences_page(
    request: Request,
    session: Session,
    token: str,
    prefs: subscriptions.Preferences,
    saved: str | None = None,
    error: NewsletterError | None = None,
) -> Response:
    """The page; `saved` is the msgid of what the last POST did, `error` why it saved nothing."""
    first = next((c.mailing_list for c in prefs.choices if c.subscribed), None) or (
        prefs.choices[0].mailing_list if prefs.choices else None
    )
    if first is not None:
        context = list_context(first, request, prefs.subscriber)
    else:
        context = site_context(request, session)
        context["lang"] = i18n.page_language(prefs.subscriber.language, None, request.headers.get("accept-language"))
    gettext = i18n.translations(context["lang"]).gettext
    return pages(request).render(
        "preferences.html",
        title=gettext("Your preferences"),
        token=token,
        prefs=prefs,
        masked_email=masked(prefs.subscriber.email),
        saved=gettext(saved) % {"error": error.translated(gettext) if error else ""} if saved else None,
        languages=[(code, i18n.language_name(code)) for code in i18n.available()],
        **context,
    )


@router.get(PATH, response_model=None, responses=schema.page({200: schema.answer("The preferences page", schema.HTML)}))
def preferences_page(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    try:
        prefs = subscriptions.preferences(session, tokens, token=token)
    except UnknownToken:
        return not_found(request, session)
    return _preferences_page(request, session, token, prefs)


@router.post(PATH, response_model=None, responses=schema.PREFERENCES_ANSWERS, openapi_extra=schema.PREFERENCES_BODY)
async def save_preferences(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    try:
        fields = form_fields(await read_body(request))
    except UnreadableForm as exc:  # refused whole: read as no lists checked, it would unsubscribe from all
        return await run_in_threadpool(_refuse, request, session, tokens, token, exc)
    return await run_in_threadpool(_save_preferences, request, session, tokens, token, fields)


def _refuse(request: Request, session: Session, tokens: Tokens, token: str, error: NewsletterError) -> Response:
    """The page again, saying why nothing was saved (400)."""
    session.rollback()
    try:
        prefs = subscriptions.preferences(session, tokens, token=token)
    except UnknownToken:
        return not_found(request, session)
    response = _preferences_page(request, session, token, prefs, i18n.N_("Nothing was saved: %(error)s"), error)
    response.status_code = 400
    return response


def _save_preferences(
    request: Request, session: Session, tokens: Tokens, token: str, fields: dict[str, list[str]]
) -> Response:
    try:
        if fields.get("action") == ["unsubscribe_all"]:
            subscriptions.unsubscribe_everything(session, tokens, token=token)
            prefs = subscriptions.preferences(session, tokens, token=token)
            return _preferences_page(request, session, token, prefs, i18n.N_("You are unsubscribed from everything."))
        lists = {int(v) for v in fields.get("list", []) if _is_id(v)}
        sections = {
            int(key.removeprefix("section.")): values
            for key, values in fields.items()
            if key.startswith("section.") and _is_id(key.removeprefix("section."))
        }
        name = fields.get("name", [None])[0]
        language = fields.get("language", [None])[0]
        prefs = subscriptions.update_preferences(
            session,
            tokens,
            token=token,
            name=name,
            lists=lists,
            sections=sections,
            ip=client_ip(request),
            language=language,
        )
    except UnknownToken:
        return not_found(request, session)
    except Invalid as exc:  # a name or a language that cannot be stored: nothing is saved, the page says why
        return _refuse(request, session, tokens, token, exc)
    return _preferences_page(request, session, token, prefs, i18n.N_("Your preferences are saved."))


def _is_id(value: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses (a 500, found by the fuzz)
    return value.isascii() and value.isdigit() and len(value) < 19
