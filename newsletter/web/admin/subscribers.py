"""/admin/subscribers: the search (address or name by their start, attribute = value, status, list; paged
by keyset so it stays fast on a million rows) with its CSV export, and one subscriber's page: attributes
edited as JSON, the consent record of each subscription, the activity timeline, and the actions block /
unblock / unsubscribe / GDPR export / erase / delete, each confirmed in words that name the consequence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from newsletter import audit, exports, gdpr, i18n, lists, subscribers
from newsletter.models import Subscriber, SubscriberStatus, SubscriptionStatus
from newsletter.subscribers import Search
from newsletter.web.admin.auth import Admin, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.lists import language_choices
from newsletter.web.admin.render import redirect, render, security_headers
from newsletter.web.api.lists import csv_response
from newsletter.web.api.params import MAX_ID, RowId
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
SUBSCRIBERS = "/admin/subscribers"
PAGE_SIZE = 25
MAX_ATTRIBUTES_JSON = 100_000
STATUSES = ("active", "blocklisted", "confirmed", "pending", "unsubscribed")
Text = Annotated[str, Query(max_length=320)]


@dataclass(frozen=True)
class Filters:
    """The search form's values, as typed (shown again above the results)."""

    email: str = ""
    name: str = ""
    attribute: str = ""  # key=value
    status: str = ""
    list: str = ""

    def search(self) -> Search:
        key, _, value = self.attribute.partition("=")
        return Search(
            email_prefix=self.email.strip() or None,
            name=self.name.strip() or None,
            attribute=(key.strip(), value.strip()) if key.strip() and "=" in self.attribute else None,
            status=SubscriberStatus(self.status) if self.status in ("active", "blocklisted") else None,
            subscription_status=SubscriptionStatus(self.status) if self.status in STATUSES[2:] else None,
            list_slug=self.list or None,
        )

    def query(self) -> str:
        return urlencode({k: v for k, v in self.__dict__.items() if v})


def _filters(
    email: Text = "",
    name: Text = "",
    attribute: Text = "",
    status: Annotated[str, Query(max_length=16)] = "",
    list: Annotated[str, Query(max_length=100)] = "",
) -> Filters:
    """The search's query parameters (the search page and its export)."""
    return Filters(email, name, attribute, status if status in STATUSES else "", list)


FiltersDep = Annotated[Filters, Depends(_filters)]


@router.get(SUBSCRIBERS)
def search(
    request: Request,
    session: SessionDep,
    me: Admin,
    filters: FiltersDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> Response:
    error = None
    if filters.attribute and "=" not in filters.attribute:
        error = "Write the attribute as name=value, such as city=Almaty."
    if filters.list and filters.list not in {m.slug for m in lists.all_lists(session)}:
        error = f"There is no list {filters.list}."
    page = None if error else subscribers.search_page(session, filters.search(), after=after, limit=PAGE_SIZE)
    return render(
        request,
        "subscribers/search.html",
        status_code=422 if error else 200,
        title="Subscribers",
        filters=filters,
        error=error,
        page=page,
        after=after,
        lists=lists.all_lists(session),
        statuses=STATUSES,
        export_statuses=exports.EXPORT_STATUSES,
    )


@router.get(SUBSCRIBERS + "/export")
def export(
    request: Request,
    session: SessionDep,
    me: Admin,
    filters: FiltersDep,
) -> StreamingResponse:
    found = filters.search()
    if found.list_slug:
        lists.get_list(session, found.list_slug)
    target = f"list:{found.list_slug}" if found.list_slug else "subscribers"
    audit.record(session, actor(request, me), "export.run", target, search=filters.__dict__)
    return csv_response(request, found, "subscribers.csv", status="all")


def _subscriber_page(
    request: Request, session: Session, settings: Any, subscriber: Subscriber, *, attributes: str | None = None,
    error: str | None = None, language: str | None = None, language_error: str | None = None,
) -> Response:  # fmt: skip
    languages = language_choices("None: the list's language, else the reader's browser")
    return render(
        request,
        "subscribers/page.html",
        status_code=422 if error or language_error else 200,
        title=subscriber.email,
        subscriber=subscriber,
        attributes_json=attributes if attributes is not None else json.dumps(subscriber.attributes, indent=2),
        error=error,
        languages=languages,
        language_label=dict(languages).get(subscriber.language or "", subscriber.language),
        values={"language": (subscriber.language or "") if language is None else language},
        errors={"language": language_error} if language_error else {},
        subscriptions=subscribers.subscriptions_of(session, subscriber),
        timeline=subscribers.activity(session, subscriber),
        bounces=subscribers.bounce_count(session, subscriber, days=settings.soft_bounce_days),
        bounce_days=settings.soft_bounce_days,
        bounce_limit=settings.soft_bounce_limit,
        actions=ACTIONS,
    )


@router.get(SUBSCRIBERS + "/{subscriber_id}")
def subscriber_page(
    request: Request, session: SessionDep, settings: SettingsDep, me: Admin, subscriber_id: RowId
) -> Response:
    return _subscriber_page(request, session, settings, subscribers.get_subscriber(session, subscriber_id))


@router.post(SUBSCRIBERS + "/{subscriber_id}/attributes")
async def save_attributes(
    request: Request, session: SessionDep, settings: SettingsDep, me: Admin, subscriber_id: RowId
) -> Response:
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    text = str((await request.form()).get("attributes", ""))[:MAX_ATTRIBUTES_JSON]
    try:
        value = json.loads(text or "{}")
        if not isinstance(value, dict):
            raise ValueError('it must be an object in braces, such as {"city": "Almaty"}')
        subscribers.update_subscriber(session, subscriber, attributes=value, replace_attributes=True)
        audit.record(session, actor(request, me), "subscriber.update", f"subscriber:{subscriber_id}")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return _subscriber_page(
            request, session, settings, subscriber, attributes=text, error=f"Not saved: the JSON is not valid ({exc})."
        )
    except subscribers.InvalidSubscriber as exc:
        session.rollback()
        subscriber = subscribers.get_subscriber(session, subscriber_id)
        return _subscriber_page(request, session, settings, subscriber, attributes=text, error=f"Not saved: {exc}.")
    return redirect(request, f"{SUBSCRIBERS}/{subscriber_id}", flash="Saved the attributes.")


@router.post(SUBSCRIBERS + "/{subscriber_id}/language")
async def save_language(
    request: Request, session: SessionDep, settings: SettingsDep, me: Admin, subscriber_id: RowId
) -> Response:
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    chosen = str((await request.form()).get("language", ""))[:100]
    try:
        subscribers.update_subscriber(session, subscriber, language=chosen)
    except i18n.InvalidLanguage as exc:
        session.rollback()
        subscriber = subscribers.get_subscriber(session, subscriber_id)
        return _subscriber_page(request, session, settings, subscriber, language=chosen, language_error=f"{exc}.")
    audit.record(session, actor(request, me), "subscriber.update", f"subscriber:{subscriber_id}", language=chosen)
    shown = dict(language_choices("none")).get(subscriber.language or "", "none")
    return redirect(request, f"{SUBSCRIBERS}/{subscriber_id}", flash=f"Saved the language: {shown}.")


@router.get(SUBSCRIBERS + "/{subscriber_id}/export.json")
def gdpr_export(request: Request, session: SessionDep, me: Admin, subscriber_id: RowId) -> Response:
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    audit.record(session, actor(request, me), "subscriber.gdpr_export", f"subscriber:{subscriber_id}")
    return JSONResponse(
        gdpr.export_subscriber(session, subscriber),
        headers={
            **security_headers(),
            "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
        },
    )


# What each action does, in the words its confirmation uses ({email} is the subscriber's address).
ACTIONS: dict[str, tuple[str, str, str]] = {
    "block": ("Block", "Block {email}: they stay on their lists but are never mailed until someone unblocks them.",
              "Blocked {email}: nothing more is sent to this address."),
    "unblock": ("Unblock", "Unblock {email}: they get the mail of the lists they are confirmed on again.",
                "Unblocked {email}."),
    "unsubscribe": ("Unsubscribe from every list",
                    "Unsubscribe {email} from every list: no more digests; their consent records are kept.",
                    "Unsubscribed {email} from {count} list(s)."),
    "erase": ("Erase", "Erase {email}: their personal data is replaced, their address can never be mailed again. "
              "Campaign statistics keep counting them anonymously. This cannot be undone.",
              "Erased the subscriber: the address is kept only as a hash on the suppression list."),
    "delete": ("Delete", "Delete {email}: the subscriber, their subscriptions and their delivery history are "
               "removed, and campaign statistics lose them. To keep the statistics, erase instead.",
               "Deleted {email}."),
}  # fmt: skip


@router.get(SUBSCRIBERS + "/{subscriber_id}/{action}")
def confirm_action(request: Request, session: SessionDep, me: Admin, subscriber_id: RowId, action: str) -> Response:
    if action not in ACTIONS:
        return redirect(request, f"{SUBSCRIBERS}/{subscriber_id}")
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    label, consequence, _ = ACTIONS[action]
    return render(
        request,
        "subscribers/confirm.html",
        title=f"{label} {subscriber.email}?",
        subscriber=subscriber,
        action=action,
        label=label,
        consequence=consequence.format(email=subscriber.email),
    )


@router.post(SUBSCRIBERS + "/{subscriber_id}/{action}")
def run_action(request: Request, session: SessionDep, me: Admin, subscriber_id: RowId, action: str) -> Response:
    if action not in ACTIONS:
        return redirect(request, f"{SUBSCRIBERS}/{subscriber_id}")
    subscriber = subscribers.get_subscriber(session, subscriber_id)
    email, count = subscriber.email, 0
    audit.record(session, actor(request, me), f"subscriber.{action}", f"subscriber:{subscriber_id}")
    if action in ("block", "unblock"):
        subscribers.set_blocked(session, subscriber, action == "block")
    elif action == "unsubscribe":
        count = subscribers.unsubscribe(session, subscriber)
    elif action == "erase":
        gdpr.erase_subscriber(session, subscriber)
    else:
        subscribers.delete_subscriber(session, subscriber)
        return redirect(request, SUBSCRIBERS, flash=ACTIONS[action][2].format(email=email))
    flash = ACTIONS[action][2].format(email=email, count=count)
    return redirect(request, f"{SUBSCRIBERS}/{subscriber_id}", flash=flash)
