"""/admin/campaigns/new?digest=SLUG: send a published digest — a test message first, then lists (with
their subscriber counts and how many people the campaign would reach), now or at a time in a chosen time
zone, then a confirmation step that names the number, the lists and the time before anything is sent.

Every step is a plain form (POST with the CSRF token); htmx only refreshes the reach as lists are ticked.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter import audit, delivery, digests, lists, previews, segments, stats
from newsletter.errors import Invalid, NotFound, Unavailable
from newsletter.mailer import get_mailer
from newsletter.models import SubscriptionStatus
from newsletter.web.admin.auth import Editor, SignedIn, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.api.deps import JobQueue
from newsletter.web.api.schemas import SLUG_PATTERN
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
NEW = "/admin/campaigns/new"
Slug = Annotated[str, Form(pattern=SLUG_PATTERN, max_length=200)]
ListSlugs = Annotated[list[str], Form(alias="lists", max_length=100)]
Zone = Annotated[str, Form(max_length=64)]
When = Annotated[str, Form(max_length=5)]
At = Annotated[str, Form(max_length=32)]
SegmentChoice = Annotated[str, Form(max_length=100)]


@cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


@dataclass
class Choice:
    """What the form holds: kept after an error so nothing has to be entered twice."""

    digest: str
    lists: list[str] = field(default_factory=list)
    when: str = "now"
    at: str = ""
    zone: str = "UTC"
    test_to: str = ""
    segment: str = ""  # a segment's name; "": everyone on the lists


def choice_form(
    digest: Slug,
    lists_: ListSlugs = [],  # noqa: B006
    when: When = "now",
    at: At = "",
    zone: Zone = "UTC",
    segment: SegmentChoice = "",
) -> Choice:
    """The review and send steps' form, read the same way by both."""
    return Choice(digest=digest, lists=list(dict.fromkeys(lists_)), when=when, at=at, zone=zone, segment=segment)


ChoiceForm = Annotated[Choice, Depends(choice_form)]


def _list_rows(session: Session) -> list[dict[str, Any]]:
    return [
        {"list": m, "confirmed": lists.subscription_counts(session, m.id)[SubscriptionStatus.confirmed.value]}
        for m in lists.all_lists(session)
    ]


def _reach(session: Session, list_slugs: Sequence[str], segment: str) -> int | None:
    """The people the ticked lists (and the chosen segment) reach now; None until a list is ticked."""
    known = {m.slug for m in lists.all_lists(session)}
    chosen = [s for s in list_slugs if s in known]
    saved = {s.name for s in segments.list_segments(session)}
    return stats.reach(session, chosen, segment if segment in saved else None) if chosen else None


def _form(
    request: Request,
    session: Session,
    choice: Choice,
    *,
    errors: dict[str, str] | None = None,
    tested: str | None = None,
    status_code: int = 200,
) -> Response:
    digest = digests.get_published(session, choice.digest)
    return render(
        request,
        "campaigns/new.html",
        title=f"Send “{digest.title}”",
        digest=digest,
        choice=choice,
        list_rows=_list_rows(session),
        segments=segments.list_segments(session),
        reach=_reach(session, choice.lists, choice.segment),
        zones=time_zones(),
        errors=errors or {},
        tested=tested,
        status_code=422 if errors else status_code,
    )


@router.get(NEW)
def new_campaign(
    request: Request, session: SessionDep, me: Editor, digest: Annotated[str, Query(pattern=SLUG_PATTERN)]
) -> Response:
    return _form(request, session, Choice(digest=digest, test_to=me.email or ""))


@router.get(NEW + "/reach")
def reach_fragment(
    request: Request,
    session: SessionDep,
    me: Editor,
    lists_: Annotated[list[Annotated[str, Query(max_length=200)]], Query(alias="lists", max_length=100)] = [],  # noqa: B006
    segment: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """How many people the ticked lists (and segment) reach (htmx swaps it in as the choice changes)."""
    return render(request, "campaigns/_reach.html", reach=_reach(session, lists_, segment))


@router.post(NEW + "/test")
def send_test(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: Editor,
    digest: Slug,
    test_to: Annotated[str, Form(max_length=320)] = "",
    lists_: ListSlugs = [],  # noqa: B006
    segment: SegmentChoice = "",
) -> Response:
    choice = Choice(digest=digest, lists=lists_, test_to=test_to.strip(), segment=segment)
    if not choice.test_to:
        return _form(request, session, choice, errors={"test_to": "Enter the address to send the test to."})
    mailer = get_mailer(settings.smtp_url, settings.outbox_dir)
    try:
        preview, result = previews.send_test(session, settings, mailer, digest, choice.test_to, None)
    except (Invalid, NotFound, Unavailable) as exc:
        return _form(request, session, choice, errors={"test_to": str(exc)})
    tested = f"Test sent to {choice.test_to} (“{preview.subject}”): the mail server said {result.code} {result.text}."
    return _form(request, session, choice, tested=tested)


def _scheduled(choice: Choice, errors: dict[str, str], now: dt.datetime) -> dt.datetime | None:
    """The send time in UTC (None: now); problems go into `errors` next to their field."""
    if choice.when != "at":
        return None
    if choice.zone not in time_zones():
        errors["zone"] = "Choose a time zone from the list."
        return None
    try:
        local = dt.datetime.fromisoformat(choice.at)
    except ValueError:
        errors["at"] = "Enter a date and time, e.g. 2026-12-24 09:00."
        return None
    at = local.replace(tzinfo=zoneinfo.ZoneInfo(choice.zone)).astimezone(dt.UTC)
    if at <= now:
        errors["at"] = f"{local:%d %B %Y %H:%M} in {choice.zone} has passed: choose a later time, or send now."
    return at


def _checked(session: Session, choice: Choice) -> tuple[dict[str, str], dt.datetime | None]:
    errors: dict[str, str] = {}
    if not choice.lists:
        errors["lists"] = "Tick at least one list to send to."
    known = {m.slug for m in lists.all_lists(session)}
    missing = [s for s in choice.lists if s not in known]
    if missing:
        errors["lists"] = f"There is no list {missing[0]!r} any more: tick the lists again."
    if choice.when not in ("now", "at"):
        errors["when"] = "Choose now or a time."
    if choice.segment and choice.segment not in {s.name for s in segments.list_segments(session)}:
        errors["segment"] = f"There is no segment {choice.segment!r} any more: choose another, or everyone."
    return errors, _scheduled(choice, errors, dt.datetime.now(dt.UTC))


@router.post(NEW + "/review")
def review(request: Request, session: SessionDep, me: Editor, choice: ChoiceForm) -> Response:
    errors, scheduled = _checked(session, choice)
    if errors:
        return _form(request, session, choice, errors=errors)
    return _confirmation(request, session, choice, scheduled)


def _confirmation(
    request: Request, session: Session, choice: Choice, scheduled: dt.datetime | None, error: str | None = None
) -> Response:
    digest = digests.get_published(session, choice.digest)
    names = {m.slug: m.name for m in lists.all_lists(session)}
    return render(
        request,
        "campaigns/confirm.html",
        title="Check and send",
        digest=digest,
        choice=choice,
        list_names=[names[s] for s in choice.lists],
        reach=stats.reach(session, choice.lists, choice.segment or None),
        scheduled=scheduled,
        local=scheduled.astimezone(zoneinfo.ZoneInfo(choice.zone)) if scheduled else None,
        error=error,
        status_code=409 if error else 200,
    )


@router.post(NEW + "/send")
def send(request: Request, session: SessionDep, jobs: JobQueue, me: Editor, choice: ChoiceForm) -> Response:
    errors, scheduled = _checked(session, choice)
    if errors:
        return _form(request, session, choice, errors=errors)
    return _create(request, session, jobs, me, choice, scheduled)


def _create(
    request: Request, session: Session, jobs: Any, me: SignedIn, choice: Choice, scheduled: dt.datetime | None
) -> Response:
    try:
        campaign = delivery.create_campaign(
            session,
            digest_slug=choice.digest,
            list_slugs=choice.lists,
            scheduled_at=scheduled,
            created_by=me.name,
            segment=choice.segment or None,
        )
        audit.campaign_created(session, actor(request, me), campaign)
    except (delivery.CampaignError, segments.SegmentNotFound) as exc:
        session.rollback()
        return _confirmation(request, session, choice, scheduled, error=str(exc))
    campaign_id = campaign.id
    session.commit()  # the task must see the campaign: enqueue only after commit
    if scheduled is None:
        jobs.start_campaign(campaign_id)
        flash = "Sending: the progress below updates by itself."
    else:
        flash = f"Scheduled for {scheduled:%d %B %Y, %H:%M} UTC."
    return redirect(request, f"/admin/campaigns/{campaign_id}", flash=flash)
