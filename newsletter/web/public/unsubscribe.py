"""Unsubscribing: the page with one button, the button, RFC 8058 one-click, and undoing it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from newsletter import i18n, links, outbox, subscriptions
from newsletter.config import Settings
from newsletter.models import Subscription
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken
from newsletter.web.deps import SessionDep, TokensDep, hot_statement, request_unit_of_work
from newsletter.web.pages import (
    NO_STORE,
    UnreadableForm,
    client_ip,
    form_fields,
    list_context,
    masked,
    message,
    not_found,
    pages,
    read_body,
)
from newsletter.web.public import schema

router = APIRouter()
PATH = f"{links.UNSUBSCRIBE}{{token}}"


def _page(
    request: Request, template: str, tokens: Tokens, token: str, subscription: Subscription, title: str, **extra: Any
) -> Response:
    """`unsubscribe.html` (the button) or `unsubscribed.html` (done, with undo): whose address, which list."""
    settings: Settings = request.app.state.settings
    context = list_context(subscription.mailing_list, request, subscription.subscriber)
    context["title"] = i18n.translations(context["lang"]).gettext(title)
    return pages(request).render(
        template,
        token=token,
        mailing_list=subscription.mailing_list,
        masked_email=masked(subscription.subscriber.email),
        preferences_url=links.preferences_url(
            settings.base_url, tokens, subscription.subscriber_id, bound_to=subscription.subscriber.created_at
        ),
        **extra,
        **context,
    )


def unsubscribed_page(
    request: Request,
    tokens: Tokens,
    token: str,
    subscription: Subscription,
    title: str = i18n.N_("You are unsubscribed"),
) -> Response:
    """Done, with the undo button when they had confirmed before; `token` is an unsubscribe token."""
    return _page(
        request,
        "unsubscribed.html",
        tokens,
        token,
        subscription,
        title=title,
        can_undo=subscription.confirmed_at is not None,
    )


@router.get(PATH, response_model=None, responses=schema.page({200: schema.answer("The page", schema.HTML)}))
def unsubscribe_page(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    """One button. A GET never changes anything: link scanners and prefetchers open these URLs."""
    try:
        subscription = subscriptions.subscription_for_token(session, tokens, TokenPurpose.unsubscribe, token)
    except UnknownToken:
        return not_found(request, session)
    if subscription.status == "unsubscribed":
        return unsubscribed_page(request, tokens, token, subscription)
    return _page(request, "unsubscribe.html", tokens, token, subscription, title=i18n.N_("Unsubscribe"))


@router.post(PATH, response_model=None, responses=schema.ONE_CLICK_ANSWERS, openapi_extra=schema.ONE_CLICK_BODY)
async def unsubscribe(token: str, request: Request) -> Response:
    """RFC 8058 one-click (body `List-Unsubscribe=One-Click`, no cookies, no auth) and the page's button."""
    try:
        one_click = form_fields(await read_body(request)).get("List-Unsubscribe") == ["One-Click"]
    except UnreadableForm:  # no RFC 8058 body: the page's button
        one_click = False
    if not one_click:
        return await run_in_threadpool(_unsubscribe_button, request, token)
    try:
        changed = await hot_statement(
            request,
            "one_click",
            subscriptions.one_click_unsubscribe_async,
            subscriptions.one_click_unsubscribe,
            token,
        )
    except UnknownToken:
        return PlainTextResponse("This unsubscribe link is not valid.\n", 404, headers=NO_STORE)
    if changed:  # its webhook event was written by that statement, outside a Session's commit
        outbox.wake()
    return PlainTextResponse("You are unsubscribed.\n", headers=NO_STORE)


def _unsubscribe_button(request: Request, token: str) -> Response:
    tokens: Tokens = request.app.state.tokens
    with request_unit_of_work(request) as session:
        try:
            result = subscriptions.unsubscribe(session, tokens, token=token, source="page")
        except UnknownToken:
            return not_found(request, session)
        return unsubscribed_page(request, tokens, token, result.subscription)


@router.post(
    f"{PATH}{links.UNDO}",
    response_model=None,
    responses=schema.form_route({200: schema.answer("Back on the list", schema.HTML)}),
)
def resubscribe(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    try:
        subscription = subscriptions.resubscribe(session, tokens, token=token, ip=client_ip(request))
    except UnknownToken:
        return not_found(request, session)
    if subscription.status != "confirmed":
        return unsubscribed_page(request, tokens, token, subscription)
    return message(
        request,
        i18n.N_("Welcome back"),
        i18n.N_("You are subscribed to %(list)s again."),
        values={"list": subscription.mailing_list.name},
        link={"href": f"{links.UNSUBSCRIBE}{token}", "label": i18n.N_("Unsubscribe after all")},
        **list_context(subscription.mailing_list, request, subscription.subscriber),
    )
