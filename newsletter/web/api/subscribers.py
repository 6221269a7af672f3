"""Admin API: subscribers — add, search and page, change, block, unsubscribe, delete, GDPR export and erase."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from newsletter import gdpr, lists, subscribers
from newsletter.models import Subscriber, SubscriberStatus, SubscriptionSource, SubscriptionStatus
from newsletter.web.api.deps import Admin, Db
from newsletter.web.api.errors import NOT_FOUND, ApiRoute
from newsletter.web.api.lists import csv_response
from newsletter.web.api.schemas import (
    SLUG_PATTERN,
    SubscriberIn,
    SubscriberOut,
    SubscriberPage,
    SubscriberPatch,
    SubscriptionOut,
    Unsubscribed,
    UnsubscribeIn,
)

router = APIRouter(tags=["subscribers"], route_class=ApiRoute)
SubscriberId = Path(ge=1, le=2**63 - 1)


def subscriber_out(subscriber: Subscriber, subscriptions: list[tuple[str, Any]]) -> SubscriberOut:
    return SubscriberOut(
        id=subscriber.id,
        email=subscriber.email,
        name=subscriber.name,
        attributes=subscriber.attributes or {},
        status=subscriber.status,
        created_at=subscriber.created_at,
        updated_at=subscriber.updated_at,
        subscriptions=[
            SubscriptionOut(
                list=slug,
                status=s.status,
                source=s.source.value,
                consent_at=s.consent_at,
                confirmed_at=s.confirmed_at,
                unsubscribed_at=s.unsubscribed_at,
            )
            for slug, s in subscriptions
        ],
    )


def one(session: Session, subscriber: Subscriber) -> SubscriberOut:
    return subscriber_out(subscriber, subscribers.subscriptions_of(session, subscriber))


def search_params(
    email: Annotated[str | None, Query(max_length=320, description="Substring of the address.")] = None,
    status: SubscriberStatus | None = None,
    list: Annotated[str | None, Query(pattern=SLUG_PATTERN, description="On this list.")] = None,
    subscription_status: Annotated[
        SubscriptionStatus | None, Query(description="With a subscription in this state (on `list` if given).")
    ] = None,
    attribute: Annotated[
        str | None, Query(max_length=1100, pattern=r"^[^:]+:.*$", description="NAME:VALUE, compared as text.")
    ] = None,
) -> subscribers.Search:
    pair = None
    if attribute is not None:
        name, _, value = attribute.partition(":")
        pair = (name, value)
    return subscribers.Search(
        email=email, status=status, list_slug=list, subscription_status=subscription_status, attribute=pair
    )


Filters = Annotated[subscribers.Search, Depends(search_params)]


@router.get("/subscribers", responses=NOT_FOUND, summary="Search subscribers, a page at a time (keyset)")
def search(
    session: Db,
    _: Admin,
    filters: Filters,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=subscribers.MAX_PAGE)] = 100,
) -> SubscriberPage:
    page = subscribers.search_page(session, filters, after=after, limit=limit)
    return SubscriberPage(
        items=[subscriber_out(s, page.subscriptions.get(s.id, [])) for s in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/subscribers/export",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}},
    summary="The subscribers a search finds, as CSV",
)
def export(request: Request, session: Db, _: Admin, filters: Filters) -> StreamingResponse:
    if filters.list_slug:
        lists.get_list(session, filters.list_slug)
    return csv_response(request, filters, "subscribers.csv")


@router.post("/subscribers", status_code=201, responses=NOT_FOUND, summary="Add a subscriber (to lists)")
def add(request: Request, body: SubscriberIn, session: Db, _: Admin) -> SubscriberOut:
    added = subscribers.add(
        session,
        body.email,
        name=body.name,
        attributes=body.attributes,
        list_slugs=body.lists,
        confirmed=body.confirmed,
        source=SubscriptionSource.api,
        resend_hours=request.app.state.settings.confirm_resend_hours,
    )
    out = one(session, added.subscriber)
    session.commit()  # the confirmation task must find the committed subscription
    for subscription_id in added.confirmations:
        # The subscribe form's path: the rate-limited Celery task (inline in embedded mode).
        request.app.state.enqueue_confirmation(subscription_id)
    return out


@router.get("/subscribers/{subscriber_id}", responses=NOT_FOUND, summary="One subscriber and their subscriptions")
def get(session: Db, _: Admin, subscriber_id: int = SubscriberId) -> SubscriberOut:
    return one(session, subscribers.get_subscriber(session, subscriber_id))


@router.patch("/subscribers/{subscriber_id}", responses=NOT_FOUND, summary="Change name, attributes, block")
def patch(body: SubscriberPatch, session: Db, _: Admin, subscriber_id: int = SubscriberId) -> SubscriberOut:
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    subscribers.update_subscriber(
        session,
        subscriber,
        name=body.name,
        attributes=body.attributes,
        replace_attributes=body.replace_attributes,
    )
    if body.blocked is not None:
        subscribers.set_blocked(session, subscriber, body.blocked)
    return one(session, subscriber)


@router.post("/subscribers/{subscriber_id}/unsubscribe", responses=NOT_FOUND, summary="Unsubscribe from lists (or all)")
def unsubscribe(body: UnsubscribeIn, session: Db, _: Admin, subscriber_id: int = SubscriberId) -> Unsubscribed:
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    return Unsubscribed(unsubscribed=subscribers.unsubscribe(session, subscriber, body.lists))


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Delete a subscriber with their ledger rows (to keep statistics, erase instead)",
)
def delete(session: Db, _: Admin, subscriber_id: int = SubscriberId) -> Response:
    subscribers.delete_subscriber(session, subscribers.get_subscriber(session, subscriber_id))
    return Response(status_code=204)


@router.get(
    "/subscribers/{subscriber_id}/gdpr",
    responses=NOT_FOUND,
    summary="GDPR export: everything stored about one subscriber",
)
def gdpr_export(session: Db, _: Admin, subscriber_id: int = SubscriberId) -> dict[str, Any]:
    return gdpr.export_subscriber(session, subscribers.get_subscriber(session, subscriber_id))


@router.post(
    "/subscribers/{subscriber_id}/erase",
    status_code=204,
    responses=NOT_FOUND,
    summary="GDPR erase: remove personal data, keep the address's hash suppressed and the statistics",
)
def erase(session: Db, _: Admin, subscriber_id: int = SubscriberId) -> Response:
    gdpr.erase_subscriber(session, subscribers.get_subscriber(session, subscriber_id))
    return Response(status_code=204)
