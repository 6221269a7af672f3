"""Provider webhooks, `POST /webhooks/{ses,sendgrid,postmark,mailgun}`: each request is verified by the
provider's module in newsletter/providers/ before anything in it is acted on, then its events are accepted
into the inbox with one statement, committed before the 200 (newsletter/providers/inbox.py), and applied
to the ledger in batches right after, off the request path, like bounces and complaints that came back by
mail. Off (404) until its setting is set; the body is capped by MAX_WEBHOOK_BODY_BYTES (web/bodylimit.py)
before it is read.

On PostgreSQL the acceptance runs on the event loop over the durable hot pool (web/deps.py `HotPools`, as
one-click unsubscribes do): no worker thread, no ORM session, one round trip. Checks that are CPU only
(HMAC, basic auth, an ECDSA signature) run on the loop too; SES's may fetch a certificate and confirm a
subscription over the network, so it runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from newsletter import links
from newsletter.config import Settings
from newsletter.db import unit_of_work
from newsletter.providers import Notice, ProviderEvent, inbox, mailgun, postmark, sendgrid, ses
from newsletter.web.api.errors import ApiRoute, described
from newsletter.web.deps import HotPools, SettingsDep

router = APIRouter(prefix=links.WEBHOOKS.rstrip("/"), tags=["webhooks"], route_class=ApiRoute)

RESPONSES: dict[int | str, dict[str, object]] = {
    401: described(
        "Not verified: signature, credentials, timestamp, topic or certificate; nothing was changed. Where the "
        "provider authenticates with HTTP basic auth (Postmark; SES when SES_WEBHOOK_AUTH is set) the answer "
        "carries a `WWW-Authenticate: Basic` challenge."
    ),
    404: described("This provider's webhook is not enabled (its setting is unset)."),
    413: described("The body is larger than MAX_WEBHOOK_BODY_BYTES."),
    422: described("Verified, but not the provider's event format."),
}


class WebhookResult(BaseModel):
    accepted: int = Field(
        description="Events of the request now in the inbox: on disk, and applied to the ledger within moments."
    )
    duplicates: int = Field(
        description="Events accepted before (the provider's retry of a request): they are not applied twice."
    )
    confirmed_topic: str | None = Field(None, description="SES: the SNS topic whose subscription was confirmed.")


@dataclass(frozen=True)
class Verified:
    notice: Notice
    nonce: str | None = None  # Mailgun: the digest of the one-time token the request spends


Verify = Callable[[Settings, Mapping[str, str], bytes], Verified]


async def _handle(
    request: Request, settings: Settings, provider: str, verify: Verify, *, in_thread: bool = False
) -> WebhookResult:
    headers = {name.lower(): value for name, value in request.headers.items()}
    body = await request.body()
    verified = (
        await run_in_threadpool(verify, settings, headers, body) if in_thread else verify(settings, headers, body)
    )
    events, nonce = verified.notice.events, verified.nonce
    accepted = 0
    if events:  # (nothing to act on, e.g. SendGrid's "processed" or an SNS confirmation: no write at all)
        redis_url = settings.effective_redis_url if nonce is not None else None
        if redis_url and nonce is not None:
            await run_in_threadpool(mailgun.spend_in_redis, redis_url, nonce)
        try:
            accepted = await _accept(request, provider, events, None if redis_url else nonce)
        except BaseException:
            if redis_url and nonce is not None:  # not accepted: Mailgun's retry of this request must pass
                await run_in_threadpool(mailgun.give_back_in_redis, redis_url, nonce)
            raise
    if accepted:
        inbox.wake()
    return WebhookResult(
        accepted=accepted, duplicates=len(events) - accepted, confirmed_topic=verified.notice.confirmed_topic
    )


async def _accept(request: Request, provider: str, events: list[ProviderEvent], nonce: str | None) -> int:
    """The events accepted and committed, the fastest way this app can."""
    pools: HotPools | None = request.app.state.hot_pools
    if pools is not None:
        async with pools.one_click.connection() as conn:  # the durable pool: a 200 means on disk
            return await inbox.accept_async(conn, provider, events, nonce=nonce)
    return await run_in_threadpool(_accept_on_session, request.app.state.sessions, provider, events, nonce)


def _accept_on_session(
    sessions: sessionmaker[Session], provider: str, events: list[ProviderEvent], nonce: str | None
) -> int:
    with unit_of_work(sessions) as session:
        return inbox.accept(session, provider, events, nonce=nonce)


def _ses(settings: Settings, headers: Mapping[str, str], body: bytes) -> Verified:
    return Verified(ses.verify(settings, headers, body))


def _sendgrid(settings: Settings, headers: Mapping[str, str], body: bytes) -> Verified:
    return Verified(Notice(sendgrid.verify(settings, headers, body)))


def _postmark(settings: Settings, headers: Mapping[str, str], body: bytes) -> Verified:
    return Verified(Notice(postmark.parse(body)))


def _mailgun(settings: Settings, headers: Mapping[str, str], body: bytes) -> Verified:
    events, nonce = mailgun.verify(settings, body)
    return Verified(Notice(events), nonce)


@router.post("/ses", summary="Amazon SES bounce, complaint and delivery notifications via SNS", responses=RESPONSES)
async def ses_webhook(request: Request, settings: SettingsDep) -> WebhookResult:
    return await _handle(request, settings, "ses", _ses, in_thread=True)


@router.post("/sendgrid", summary="SendGrid Event Webhook (signed)", responses=RESPONSES)
async def sendgrid_webhook(request: Request, settings: SettingsDep) -> WebhookResult:
    return await _handle(request, settings, "sendgrid", _sendgrid)


@router.post("/postmark", summary="Postmark bounce, spam complaint and delivery webhooks", responses=RESPONSES)
async def postmark_webhook(request: Request, settings: SettingsDep) -> WebhookResult:
    # Basic auth is Postmark's only proof: checked before a byte of the body is read.
    postmark.authenticate(settings, {name.lower(): value for name, value in request.headers.items()})
    return await _handle(request, settings, "postmark", _postmark)


@router.post("/mailgun", summary="Mailgun webhooks (signed, JSON)", responses=RESPONSES)
async def mailgun_webhook(request: Request, settings: SettingsDep) -> WebhookResult:
    return await _handle(request, settings, "mailgun", _mailgun)
