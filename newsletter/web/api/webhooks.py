"""Admin API: outgoing webhook endpoints, their delivery log and redelivery (admins only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from newsletter.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from newsletter.outbox import EVENT_TYPES
from newsletter.web.api.deps import Admin
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute
from newsletter.web.api.params import MAX_ID, RowId
from newsletter.web.api.schemas import NO_NUL
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.webhooks import dispatch, endpoints
from newsletter.webhooks.destinations import MAX_URL_LENGTH

router = APIRouter(tags=["webhooks"], route_class=ApiRoute)
EndpointId = RowId
EVENTS = f'Event types ({", ".join(EVENT_TYPES)}), or ["*"] for all.'


class WebhookIn(BaseModel):
    url: str = Field(max_length=MAX_URL_LENGTH, pattern=NO_NUL, description="https:// on a public address.")
    events: list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]] = Field(
        min_length=1, max_length=20, description=EVENTS
    )
    description: str = Field("", max_length=endpoints.MAX_DESCRIPTION, pattern=NO_NUL)


class WebhookPatch(BaseModel):
    events: list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]] | None = Field(
        None, max_length=20, description=EVENTS
    )
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: int
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: dt.datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="`whsec_…`: shown this once; verify signatures with it.")


class SecretOut(BaseModel):
    id: int
    secret: str


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event_id: int
    webhook_id: str = Field(description="The `webhook-id` header: the same on every attempt of an event.")
    attempt: int
    manual: bool
    status: WebhookDeliveryStatus
    response_code: int | None
    response_excerpt: str | None
    duration_ms: int | None
    error: str | None
    sent_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime


def endpoint_out(e: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=e.id,
        url=e.url,
        description=e.description,
        events=e.event_types,
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        created_at=e.created_at,
    )


def delivery_out(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        webhook_id=dispatch.message_id(row.event_id),
        attempt=row.attempt,
        manual=row.manual,
        status=row.status,
        response_code=row.response_code,
        response_excerpt=row.response_excerpt,
        duration_ms=row.duration_ms,
        error=row.error,
        sent_at=row.claimed_at,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
    )


@router.get("/webhooks", summary="Outgoing webhook endpoints")
def list_webhooks(session: SessionDep, _: Admin) -> list[WebhookOut]:
    return [endpoint_out(e) for e in endpoints.all_endpoints(session)]


@router.post("/webhooks", status_code=201, summary="Register an endpoint (its URL is checked: SSRF)")
def create_webhook(body: WebhookIn, session: SessionDep, settings: SettingsDep, _: Admin) -> WebhookCreated:
    endpoint = endpoints.create(session, settings, body.url, body.events, description=body.description)
    return WebhookCreated(**endpoint_out(endpoint).model_dump(), secret=endpoint.secret)


@router.get("/webhooks/{endpoint_id}", summary="One endpoint", responses=NOT_FOUND)
def get_webhook(endpoint_id: EndpointId, session: SessionDep, _: Admin) -> WebhookOut:
    return endpoint_out(endpoints.get(session, endpoint_id))


@router.patch("/webhooks/{endpoint_id}", summary="Change its events, enable or disable it", responses=NOT_FOUND)
def update_webhook(endpoint_id: EndpointId, body: WebhookPatch, session: SessionDep, _: Admin) -> WebhookOut:
    endpoint = endpoints.get(session, endpoint_id)
    if body.events is not None:
        endpoints.set_event_types(session, endpoint_id, body.events)
    if body.enabled is True and not endpoint.enabled:
        endpoints.enable(session, endpoint_id)
    elif body.enabled is False and endpoint.enabled:
        endpoints.disable(session, endpoint_id, "disabled through the API")
    return endpoint_out(endpoint)


@router.delete("/webhooks/{endpoint_id}", status_code=204, summary="Remove it and its log", responses=NOT_FOUND)
def delete_webhook(endpoint_id: EndpointId, session: SessionDep, _: Admin) -> Response:
    endpoints.delete(session, endpoint_id)
    return Response(status_code=204)


@router.post("/webhooks/{endpoint_id}/rotate-secret", summary="A new signing secret", responses=NOT_FOUND)
def rotate_secret(endpoint_id: EndpointId, session: SessionDep, _: Admin) -> SecretOut:
    return SecretOut(id=endpoint_id, secret=endpoints.rotate_secret(session, endpoint_id).secret)


@router.get("/webhooks/{endpoint_id}/deliveries", summary="Its delivery log, newest first", responses=NOT_FOUND)
def list_deliveries(
    endpoint_id: EndpointId,
    session: SessionDep,
    _: Admin,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Older than this delivery id.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeliveryOut]:
    return [delivery_out(r) for r in dispatch.log_of(session, endpoint_id, before=before, limit=limit)]


@router.post(
    "/webhooks/deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery's event again, once (sent after this request commits)",
    responses={**NOT_FOUND, **CONFLICT},
)
def redeliver(delivery_id: RowId, session: SessionDep, _: Admin) -> DeliveryOut:
    return delivery_out(dispatch.redeliver(session, delivery_id))
