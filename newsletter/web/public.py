"""Public pages and endpoints: subscribe, confirm, unsubscribe, preferences, tracking, archive and feed.

Embedding the subscribe form elsewhere: `POST /subscribe/{list}` with a form-encoded body and
`Accept: application/json` (a CORS "simple request", no preflight), or with a JSON body
`{"email": ..., "name": ..., "attributes": {...}}`, answers JSON: 200 `{"status": "ok", "message": ...}`,
400 `{"error": ..., "field": "email"}` or 429. Cross-origin callers must be listed in the list's
`cors_origins` (`"*"` allows any site).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from feedgen.feed import FeedGenerator
from sqlalchemy import event, select
from sqlalchemy.orm import Session, selectinload

from newsletter import delivery, links, rendering, subscriptions, tracking
from newsletter.addresses import InvalidEmail
from newsletter.config import Settings
from newsletter.errors import Invalid
from newsletter.lists import ListNotFound
from newsletter.models import Campaign, CampaignStatus, Digest, MailingList, Visibility, campaign_lists
from newsletter.subscriptions import ListNotSubscribable
from newsletter.tokens import ExpiredToken, TokenPurpose, Tokens, UnknownToken
from newsletter.web.app import HotPools, get_app_settings, get_session, get_tokens
from newsletter.web.pages import Pages
from newsletter.web.throttle import Throttle

log = logging.getLogger(__name__)
router = APIRouter(tags=["public"])

# The unit of work ends before the response is sent: a 200 means the change is committed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
TokensDep = Annotated[Tokens, Depends(get_tokens)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

MAX_BODY = 16_384  # a subscribe form or a one-click body is a few dozen bytes
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def pages(request: Request) -> Pages:
    pages_: Pages = request.app.state.pages
    return pages_


def client_ip(request: Request) -> str | None:
    # Behind a reverse proxy run uvicorn with --proxy-headers/--forwarded-allow-ips so this is the client.
    return request.client.host if request.client else None


def masked(email: str) -> str:
    """Enough of the address for its owner to recognise it, little for whoever got the link forwarded."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 3), 8)}@{domain}"


def list_context(mailing_list: MailingList) -> dict[str, Any]:
    theme = subscriptions.publication_theme(mailing_list)
    address = ", ".join(line.strip() for line in theme.postal_address.splitlines() if line.strip())
    return {"publication": theme.publication_name, "postal_address": address}


_SITE_TTL = 60.0


def site_context(request: Request, session: Session) -> dict[str, Any]:
    """The publication shown on pages that belong to no list: the first public list's (cached a minute)."""
    cached = getattr(request.app.state, "site_context", None)
    if cached is not None and time.monotonic() - cached[0] < _SITE_TTL:
        return dict(cached[1])
    first = session.scalar(
        select(MailingList).where(MailingList.visibility == Visibility.public).order_by(MailingList.id).limit(1)
    )
    context = list_context(first) if first is not None else {"publication": "Newsletter", "postal_address": ""}
    request.app.state.site_context = (time.monotonic(), context)
    return dict(context)


def not_found(request: Request, session: Session, what: str = "This link is not valid") -> Response:
    return pages(request).render(
        "message.html",
        status_code=404,
        title=what,
        paragraphs=[
            "It may have been copied incompletely from the email, or it belongs to something that no longer "
            "exists. Nothing was changed."
        ],
        link={"href": "/archive", "label": "Go to the archive"},
        **site_context(request, session),
    )


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the request's unit of work has committed (tasks must see committed rows)."""
    event.listen(session, "after_commit", lambda _session: callback(), once=True)


def enqueue_confirmation(subscription_id: int) -> None:
    """Default `app.state.enqueue_confirmation`: the Celery task (run inline in embedded mode)."""
    from worker import tasks

    try:
        tasks.send_confirmation.delay(subscription_id)
    except Exception:  # the subscription is committed; the person can ask again, the error is logged
        log.exception("could not send or enqueue the confirmation email of subscription %s", subscription_id)


async def read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return b""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return b""
    return body


def form_fields(body: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return {}


# --- assets -----------------------------------------------------------------------------------------------


@router.get("/static/style.css", include_in_schema=False)
def stylesheet(request: Request) -> Response:
    return pages(request).stylesheet_response()


# --- subscribe --------------------------------------------------------------------------------------------


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
    request: Request, mailing_list: MailingList, *, error: str | None = None, values: dict[str, str] | None = None
) -> Response:
    return pages(request).render(
        "subscribe.html",
        status_code=400 if error else 200,
        title=f"Subscribe to {mailing_list.name}",
        mailing_list=mailing_list,
        fields=_field_specs(mailing_list),
        double_opt_in=mailing_list.opt_in == "double",
        error=error,
        values=values or {},
        robots="index",
        **list_context(mailing_list),
    )


@router.get("/subscribe/{slug}", response_model=None)
def subscribe_form(slug: str, request: Request, session: SessionDep) -> Response:
    mailing_list = _public_list(session, slug)
    if mailing_list is None:
        return not_found(request, session, "There is no such newsletter")
    return _subscribe_page(request, mailing_list)


def _cors_headers(request: Request, mailing_list: MailingList | None) -> dict[str, str]:
    origin = request.headers.get("origin")
    allowed = (mailing_list.cors_origins or []) if mailing_list is not None else []
    if origin and (origin in allowed or "*" in allowed):
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


@router.options("/subscribe/{slug}", include_in_schema=False)
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
            "Check your inbox",
            "If this address can receive our email, a message with a confirmation link is on its way. "
            "Open it to start receiving "
            f"{mailing_list.name}. Nothing arrived? Look in your spam folder; you can ask again tomorrow.",
        )
    return ("Thank you", f"This address will receive {mailing_list.name}. Every email has an unsubscribe link.")


@router.post("/subscribe/{slug}", response_model=None)
async def subscribe(slug: str, request: Request, session: SessionDep) -> Response:
    """The form (HTML answer) and its embeddable JSON variant; see the module docstring."""
    body = await read_body(request)
    is_json = request.headers.get("content-type", "").startswith("application/json")
    wants_json = is_json or "application/json" in request.headers.get("accept", "")
    values: dict[str, str] = {}
    if is_json:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if isinstance(data, dict):
            values = {k: str(v) for k, v in data.items() if isinstance(v, str | int | float)}
            attributes = data.get("attributes")
            if isinstance(attributes, dict):
                values.update({f"attr.{k}": str(v) for k, v in attributes.items() if isinstance(v, str)})
    else:
        values = {key: items[0] for key, items in form_fields(body).items()}
    return await run_in_threadpool(_subscribe, request, session, slug, values, wants_json)


def _subscribe(request: Request, session: Session, slug: str, values: dict[str, str], wants_json: bool) -> Response:
    settings: Settings = request.app.state.settings
    mailing_list = _public_list(session, slug)
    cors = _cors_headers(request, mailing_list)
    if mailing_list is None:
        if wants_json:
            return JSONResponse({"error": "there is no such newsletter"}, 404, headers=cors)
        return not_found(request, session, "There is no such newsletter")
    throttle: Throttle = request.app.state.subscribe_throttle
    if not throttle.allow(client_ip(request) or "unknown"):
        message = "Too many attempts from your network. Please try again in an hour."
        headers = {**cors, "Retry-After": "3600"}
        if wants_json:
            return JSONResponse({"error": message}, 429, headers=headers)
        response = pages(request).render(
            "message.html", status_code=429, title="Please try again later", paragraphs=[message],
            **list_context(mailing_list),
        )  # fmt: skip
        response.headers.update(headers)
        return response
    title, message = _done_message(mailing_list)
    if values.get("website"):
        # The honeypot: a person never sees the field, a bot fills it. It gets the usual answer, nothing else.
        log.info("subscribe honeypot hit for list %s from %s", slug, client_ip(request))
    else:
        attributes = subscriptions.form_attributes(
            mailing_list, {k.removeprefix("attr."): v for k, v in values.items() if k.startswith("attr.")}
        )
        missing = [f["label"] for f in _field_specs(mailing_list) if f["required"] and f["name"] not in attributes]
        try:
            if missing:
                raise InvalidEmail(f"please also fill in: {', '.join(missing)}")
            result = subscriptions.subscribe(
                session,
                mailing_list,
                values.get("email", ""),
                name=values.get("name", ""),
                attributes=attributes,
                ip=client_ip(request),
                resend_hours=settings.confirm_resend_hours,
            )
        except Invalid as exc:  # the address, the name or an extra field
            session.rollback()
            if wants_json:
                field = "attributes" if missing else getattr(exc, "field", "email")
                return JSONResponse({"error": str(exc), "field": field}, 400, headers=cors)
            return _subscribe_page(request, mailing_list, error=str(exc), values=values)
        if result.send_confirmation and result.subscription_id is not None:
            subscription_id = result.subscription_id
            on_commit(session, lambda: request.app.state.enqueue_confirmation(subscription_id))
    if wants_json:
        return JSONResponse({"status": "ok", "message": message}, headers=cors)
    return pages(request).render("message.html", title=title, paragraphs=[message], **list_context(mailing_list))


# --- confirm ----------------------------------------------------------------------------------------------


@router.get("/confirm/{token}", response_model=None)
def confirm(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    try:
        subscription = subscriptions.confirm(session, tokens, token=token, ip=client_ip(request))
    except ExpiredToken:
        return pages(request).render(
            "message.html",
            status_code=410,
            title="This confirmation link has expired",
            paragraphs=["Confirmation links work for 7 days. Please subscribe again to get a fresh one."],
            **site_context(request, session),
        )
    except UnknownToken:
        return not_found(request, session)
    mailing_list = subscription.mailing_list
    settings: Settings = request.app.state.settings
    return pages(request).render(
        "message.html",
        title="You are subscribed",
        paragraphs=[
            f"Thank you for confirming. {subscription.subscriber.email} will receive {mailing_list.name}.",
            "Every email has a link to unsubscribe in one click or to change your preferences.",
        ],
        link={
            "href": links.preferences_url(settings.base_url, tokens, subscription.subscriber_id),
            "label": "Your preferences",
        },
        **list_context(mailing_list),
    )


# --- unsubscribe ------------------------------------------------------------------------------------------


def _unsubscribed_page(
    request: Request, tokens: Tokens, token: str, subscription: Any, title: str = "You are unsubscribed"
) -> Response:
    settings: Settings = request.app.state.settings
    return pages(request).render(
        "unsubscribed.html",
        title=title,
        token=token,
        mailing_list=subscription.mailing_list,
        masked_email=masked(subscription.subscriber.email),
        can_undo=subscription.confirmed_at is not None,
        preferences_url=links.preferences_url(settings.base_url, tokens, subscription.subscriber_id),
        **list_context(subscription.mailing_list),
    )


@router.get("/unsubscribe/{token}", response_model=None)
def unsubscribe_page(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    """One button. A GET never changes anything: link scanners and prefetchers open these URLs."""
    try:
        subscription = subscriptions.subscription_for_token(session, tokens, TokenPurpose.unsubscribe, token)
    except UnknownToken:
        return not_found(request, session)
    if subscription.status == "unsubscribed":
        return _unsubscribed_page(request, tokens, token, subscription)
    settings: Settings = request.app.state.settings
    return pages(request).render(
        "unsubscribe.html",
        title="Unsubscribe",
        token=token,
        mailing_list=subscription.mailing_list,
        masked_email=masked(subscription.subscriber.email),
        preferences_url=links.preferences_url(settings.base_url, tokens, subscription.subscriber_id),
        **list_context(subscription.mailing_list),
    )


@router.post("/unsubscribe/{token}", response_model=None)
async def unsubscribe(token: str, request: Request) -> Response:
    """RFC 8058 one-click (body `List-Unsubscribe=One-Click`, no cookies, no auth) and the page's button."""
    tokens: Tokens = request.app.state.tokens
    one_click = form_fields(await read_body(request)).get("List-Unsubscribe") == ["One-Click"]
    if not one_click:
        return await run_in_threadpool(_unsubscribe_page_button, request, tokens, token)
    pools: HotPools | None = request.app.state.hot_pools
    try:
        if pools is None:
            await run_in_threadpool(_one_click, request, tokens, token)
        else:
            async with pools.one_click.connection() as conn:
                await subscriptions.one_click_unsubscribe_async(conn, tokens, token=token)
    except UnknownToken:
        return PlainTextResponse("This unsubscribe link is not valid.\n", 404, headers=NO_STORE)
    return PlainTextResponse("You are unsubscribed.\n", headers=NO_STORE)


def _one_click(request: Request, tokens: Tokens, token: str) -> None:
    with unit_of_work(request, "one_click_sessions") as session:
        subscriptions.one_click_unsubscribe(session, tokens, token=token)


def _unsubscribe_page_button(request: Request, tokens: Tokens, token: str) -> Response:
    with unit_of_work(request) as session:
        try:
            result = subscriptions.unsubscribe(session, tokens, token=token, source="page")
        except UnknownToken:
            return not_found(request, session)
        return _unsubscribed_page(request, tokens, token, result.subscription)


@router.post("/unsubscribe/{token}/undo", response_model=None)
def resubscribe(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    try:
        subscription = subscriptions.resubscribe(session, tokens, token=token, ip=client_ip(request))
    except UnknownToken:
        return not_found(request, session)
    if subscription.status != "confirmed":
        return _unsubscribed_page(request, tokens, token, subscription)
    return pages(request).render(
        "message.html",
        title="Welcome back",
        paragraphs=[f"You are subscribed to {subscription.mailing_list.name} again."],
        link={"href": f"/unsubscribe/{token}", "label": "Unsubscribe after all"},
        **list_context(subscription.mailing_list),
    )


# --- preferences ------------------------------------------------------------------------------------------


def _preferences_page(
    request: Request, session: Session, token: str, prefs: subscriptions.Preferences, saved: str | None = None
) -> Response:
    first = next((c.mailing_list for c in prefs.choices if c.subscribed), None) or (
        prefs.choices[0].mailing_list if prefs.choices else None
    )
    context = list_context(first) if first is not None else site_context(request, session)
    return pages(request).render(
        "preferences.html",
        title="Your preferences",
        token=token,
        prefs=prefs,
        masked_email=masked(prefs.subscriber.email),
        saved=saved,
        **context,
    )


@router.get("/preferences/{token}", response_model=None)
def preferences_page(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    try:
        prefs = subscriptions.preferences(session, tokens, token=token)
    except UnknownToken:
        return not_found(request, session)
    return _preferences_page(request, session, token, prefs)


@router.post("/preferences/{token}", response_model=None)
async def save_preferences(token: str, request: Request, session: SessionDep, tokens: TokensDep) -> Response:
    fields = form_fields(await read_body(request))
    return await run_in_threadpool(_save_preferences, request, session, tokens, token, fields)


def _save_preferences(
    request: Request, session: Session, tokens: Tokens, token: str, fields: dict[str, list[str]]
) -> Response:
    try:
        if fields.get("action") == ["unsubscribe_all"]:
            subscriptions.unsubscribe_everything(session, tokens, token=token)
            prefs = subscriptions.preferences(session, tokens, token=token)
            return _preferences_page(request, session, token, prefs, "You are unsubscribed from everything.")
        lists = {int(v) for v in fields.get("list", []) if v.isdigit() and len(v) < 19}
        sections = {
            int(key.removeprefix("section.")): values
            for key, values in fields.items()
            if key.startswith("section.") and key.removeprefix("section.").isdigit()
        }
        name = fields.get("name", [None])[0]
        prefs = subscriptions.update_preferences(
            session, tokens, token=token, name=name, lists=lists, sections=sections, ip=client_ip(request)
        )
    except UnknownToken:
        return not_found(request, session)
    except Invalid as exc:  # a name that cannot be stored: nothing is saved, the page says why
        session.rollback()
        prefs = subscriptions.preferences(session, tokens, token=token)
        response = _preferences_page(request, session, token, prefs, f"Nothing was saved: {exc}")
        response.status_code = 400
        return response
    return _preferences_page(request, session, token, prefs, "Your preferences are saved.")


# --- tracking ---------------------------------------------------------------------------------------------

_PIXEL_HEADERS = {"Cache-Control": "no-store, private", "Expires": "0"}


# The three hottest endpoints (every recipient's mail client or mailbox provider calls them) are one SQL
# statement each. On PostgreSQL they run it on the event loop, on the async pools of `app.HotPools`;
# otherwise (SQLite, or before the pools are open) in one worker thread on the lean sessions of
# `app.hot_session_factories`. Either way the change is committed before the response is sent.


@contextmanager
def unit_of_work(request: Request, kind: str = "sessions") -> Iterator[Session]:
    with getattr(request.app.state, kind).begin() as session:
        yield session


def _record_open(request: Request, tokens: Tokens, token: str) -> None:
    with unit_of_work(request, "tracking_sessions") as session:
        tracking.record_open(session, tokens, token=token)


def _record_click(request: Request, tokens: Tokens, token: str) -> str:
    with unit_of_work(request, "tracking_sessions") as session:
        return tracking.record_click(session, tokens, token=token)


@router.get("/o/{token}", response_model=None)
async def open_pixel(token: str, request: Request) -> Response:
    tokens: Tokens = request.app.state.tokens
    pools: HotPools | None = request.app.state.hot_pools
    try:
        if pools is None:
            await run_in_threadpool(_record_open, request, tokens, token)
        else:
            async with pools.tracking.connection() as conn:
                await tracking.record_open_async(conn, tokens, token=token)
    except UnknownToken:
        return Response(status_code=404, headers=_PIXEL_HEADERS)
    return Response(tracking.PIXEL, media_type="image/gif", headers=_PIXEL_HEADERS)


@router.get("/c/{token}", response_model=None)
async def click(token: str, request: Request) -> Response:
    """302 to the campaign's registered URL, never to anything taken from the request."""
    tokens: Tokens = request.app.state.tokens
    pools: HotPools | None = request.app.state.hot_pools
    try:
        if pools is None:
            url = await run_in_threadpool(_record_click, request, tokens, token)
        else:
            async with pools.tracking.connection() as conn:
                url = await tracking.record_click_async(conn, tokens, token=token)
    except UnknownToken:
        return PlainTextResponse("This link is not valid.\n", 404, headers=NO_STORE)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


# --- archive and feed -------------------------------------------------------------------------------------


def _archived() -> Any:
    """Digests that went out to a public list: a draft is not shown before its email is."""
    return (
        select(Campaign.digest_id)
        .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
        .join(MailingList, MailingList.id == campaign_lists.c.list_id)
        .where(
            Campaign.status.in_([CampaignStatus.sending, CampaignStatus.finished]),
            MailingList.visibility == Visibility.public,
        )
    )


def archived_digests(session: Session, limit: int | None = None) -> list[Digest]:
    query = (
        select(Digest)
        .where(Digest.id.in_(_archived().scalar_subquery()))
        .options(selectinload(Digest.items))
        .order_by(Digest.date.desc(), Digest.id.desc())
    )
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


@router.get("/archive", response_model=None)
def archive(request: Request, session: SessionDep) -> Response:
    subscribable = session.scalars(
        select(MailingList).where(MailingList.visibility == Visibility.public).order_by(MailingList.name)
    ).all()
    return pages(request).render(
        "archive.html",
        title="Archive",
        digests=archived_digests(session),
        subscribe_lists=subscribable,
        format_date=rendering.format_date,
        robots="index",
        **site_context(request, session),
    )


@router.get("/archive/{slug}", response_model=None)
def archived_digest(slug: str, request: Request, session: SessionDep) -> Response:
    digest = session.scalar(select(Digest).where(Digest.slug == slug, Digest.id.in_(_archived().scalar_subquery())))
    if digest is None:
        return not_found(request, session, "There is no such issue")
    return pages(request).render(
        "digest.html",
        title=digest.title,
        robots="index",
        **rendering.digest_page_context(delivery.digest_model(digest)),
        **site_context(request, session),
    )


@router.get("/feed.xml", response_model=None)
def feed(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Atom feed of the archive: each entry carries the whole issue as HTML."""
    site = site_context(request, session)
    digests = archived_digests(session, limit=20)
    generator = FeedGenerator()
    generator.id(f"{settings.base_url}/archive")
    generator.title(site["publication"])
    generator.author({"name": site["publication"]})
    generator.link(href=f"{settings.base_url}/archive", rel="alternate")
    generator.link(href=f"{settings.base_url}/feed.xml", rel="self")
    generator.language("en")
    newest = max((d.published_at for d in digests), default=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    generator.updated(newest)
    body = pages(request).environment.get_template("digest_body.html")
    for digest in reversed(digests):  # feedgen prepends: add oldest first so the newest leads
        url = f"{settings.base_url}/archive/{digest.slug}"
        entry = generator.add_entry()
        entry.id(url)
        entry.title(digest.title)
        entry.link(href=url, rel="alternate")
        entry.published(digest.published_at)
        entry.updated(digest.published_at)
        entry.content(body.render(**rendering.digest_page_context(delivery.digest_model(digest))), type="html")
    return Response(
        generator.atom_str(pretty=False),
        media_type="application/atom+xml",
        headers={"Cache-Control": "public, max-age=300"},
    )
