"""Admin API: subscribers — add, search and page, change, block, unsubscribe, delete, GDPR export and erase."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from newsletter import audit, gdpr, lists, subscribers
from newsletter.models import Subscriber, SubscriberStatus, SubscriptionSource, SubscriptionStatus
from newsletter.web.api.deps import Admin, AdminActor
from newsletter.web.api.errors import NOT_FOUND, ApiRoute
from newsletter.web.api.lists import csv_response
from newsletter.web.api.params import Cursor, RowId
from newsletter.web.api.schemas import (
    SLUG_PATTERN,
    SubscriberIn,
    SubscriberOut,
    SubscriberPage,
    SubscriberPatch,
    SubscriptionOut,
    Unsubscribed,
    UnsubscribeIn,
    row_fields,
)
from newsletter.web.deps import SessionDep

router = APIRouter(tags=["subscribers"], route_class=ApiRoute)


def path_subscriber(session: SessionDep, subscriber_id: RowId) -> Subscriber:
    """The subscriber the path names (404 if there is none)."""
    return subscribers.get_subscriber(session, subscriber_id)


PathSubscriber = Annotated[Subscriber, Depends(path_subscriber)]


def target(subscriber: Subscriber) -> str:
    """How the audit log names a subscriber: by id, never by address (an erased one has none)."""
    return f"subscriber:{subscriber.id}"


def subscriber_out(subscriber: Subscriber, subscriptions: list[tuple[str, Any]]) -> SubscriberOut:
    return SubscriberOut(
        **row_fields(subscriber, SubscriberOut, exclude={"attributes", "subscriptions"}),
        attributes=subscriber.attributes or {},
        subscriptions=[
            SubscriptionOut(
                **row_fields(s, SubscriptionOut, exclude={"list", "source"}), list=slug, source=s.source.value
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
    session: SessionDep,
    _: Admin,
    filters: Filters,
    after: Cursor = None,
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
def export(request: Request, session: SessionDep, who: AdminActor, filters: Filters) -> StreamingResponse:
    if filters.list_slug:
        lists.get_list(session, filters.list_slug)
    audit.record(session, who, "export.run", f"list:{filters.list_slug}" if filters.list_slug else "subscribers")
    return csv_response(request, filters, "subscribers.csv")


@router.post("/subscribers", status_code=201, responses=NOT_FOUND, summary="Add a subscriber (to lists)")
def add(request: Request, body: SubscriberIn, session: SessionDep, _: Admin) -> SubscriberOut:
    added = subscribers.add(
        session,
        body.email,
        name=body.name,
        attributes=body.attributes,
        list_slugs=body.lists,
        confirmed=body.confirmed,
        language=body.language,
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
def get(session: SessionDep, _: Admin, subscriber: PathSubscriber) -> SubscriberOut:
    return one(session, subscriber)


@router.patch("/subscribers/{subscriber_id}", responses=NOT_FOUND, summary="Change name, attributes, block")
def patch(body: SubscriberPatch, session: SessionDep, who: AdminActor, subscriber: PathSubscriber) -> SubscriberOut:
    subscribers.update_subscriber(
        session,
        subscriber,
        name=body.name,
        attributes=body.attributes,
        replace_attributes=body.replace_attributes,
        language=body.language,
    )
    if body.blocked is not None:
        subscribers.set_blocked(session, subscriber, body.blocked)
        audit.record(session, who, "subscriber.block" if body.blocked else "subscriber.unblock", target(subscriber))
    return one(session, subscriber)


@router.post("/subscribers/{subscriber_id}/unsubscribe", responses=NOT_FOUND, summary="Unsubscribe from lists (or all)")
def unsubscribe(body: UnsubscribeIn, session: SessionDep, who: AdminActor, subscriber: PathSubscriber) -> Unsubscribed:
    audit.record(session, who, "subscriber.unsubscribe", target(subscriber), lists=list(body.lists))
    return Unsubscribed(unsubscribed=subscribers.unsubscribe(session, subscriber, body.lists))


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Delete a subscriber with their ledger rows (to keep statistics, erase instead)",
)
def delete(session: SessionDep, who: AdminActor, subscriber: PathSubscriber) -> Response:
    audit.record(session, who, "subscriber.delete", target(subscriber))
    subscribers.delete_subscriber(session, subscriber)
    return Response(status_code=204)


@router.get(
    "/subscribers/{subscriber_id}/gdpr",
    responses=NOT_FOUND,
    summary="GDPR export: everything stored about one subscriber",
)
def gdpr_export(session: SessionDep, _: Admin, subscriber: PathSubscriber) -> dict[str, Any]:
    return gdpr.export_subscriber(session, subscriber)


@router.post(
    "/subscribers/{subscriber_id}/erase",
    status_code=204,
    responses=NOT_FOUND,
    summary="GDPR erase: remove personal data, keep the address's hash suppressed and the statistics",
)
def erase(session: SessionDep, who: AdminActor, subscriber: PathSubscriber) -> Response:
    audit.record(session, who, "subscriber.erase", target(subscriber))
    gdpr.erase_subscriber(session, subscriber)
    return Response(status_code=204)
