"""Provider webhooks, `POST /webhooks/{ses,sendgrid,postmark,mailgun}`: each request is verified by the
provider's module in newsletter/providers/ before anything in it is acted on, then its events are
recorded like bounces and complaints that came back by mail. Off (404) until its setting is set; the
body is capped by MAX_WEBHOOK_BODY_BYTES (web/bodylimit.py) before it is read."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from newsletter import links, providers
from newsletter.config import Settings
from newsletter.providers import Notice, mailgun, postmark, sendgrid, ses
from newsletter.web.api.errors import ApiRoute, described
from newsletter.web.api.schemas import BounceOutcome
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(prefix=links.WEBHOOKS.rstrip("/"), tags=["webhooks"], route_class=ApiRoute)

RESPONSES: dict[int | str, dict[str, object]] = {
    401: described("Not verified: signature, credentials, timestamp, topic or certificate; nothing was changed."),
    404: described("This provider's webhook is not enabled (its setting is unset)."),
    413: described("The body is larger than MAX_WEBHOOK_BODY_BYTES."),
    422: described("Verified, but not the provider's event format."),
}


class WebhookResult(BaseModel):
    events: list[BounceOutcome] = Field(description="What each event of the request did.")
    confirmed_topic: str | None = Field(None, description="SES: the SNS topic whose subscription was confirmed.")


Verified = Callable[[Session, Settings, dict[str, str], bytes], Notice]


async def _handle(request: Request, session: Session, settings: Settings, verified: Verified) -> WebhookResult:
    headers = {name.lower(): value for name, value in request.headers.items()}
    body = await request.body()

    def work() -> WebhookResult:
        notice = verified(session, settings, headers, body)
        # the provider's name from the route (/webhooks/ses ...), for newsletter_bounces_total{source}
        source = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        outcomes = providers.record(session, settings, notice.events, source=source)
        session.commit()
        return WebhookResult(
            events=[BounceOutcome.model_validate(o.as_dict()) for o in outcomes],
            confirmed_topic=notice.confirmed_topic,
        )

    return await run_in_threadpool(work)


@router.post("/ses", summary="Amazon SES bounce, complaint and delivery notifications via SNS", responses=RESPONSES)
async def ses_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> WebhookResult:
    return await _handle(request, session, settings, lambda _, s, h, b: ses.verify(s, h, b))


@router.post("/sendgrid", summary="SendGrid Event Webhook (signed)", responses=RESPONSES)
async def sendgrid_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> WebhookResult:
    return await _handle(request, session, settings, lambda _, s, h, b: Notice(sendgrid.verify(s, h, b)))


@router.post("/postmark", summary="Postmark bounce, spam complaint and delivery webhooks", responses=RESPONSES)
async def postmark_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> WebhookResult:
    # Basic auth is Postmark's only proof: checked before a byte of the body is read.
    postmark.authenticate(settings, {name.lower(): value for name, value in request.headers.items()})
    return await _handle(request, session, settings, lambda _, s, h, b: Notice(postmark.parse(b)))


@router.post("/mailgun", summary="Mailgun webhooks (signed, JSON)", responses=RESPONSES)
async def mailgun_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> WebhookResult:
    return await _handle(request, session, settings, lambda db, s, h, b: Notice(mailgun.verify(db, s, b)))
