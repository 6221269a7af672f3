"""The double opt-in confirmation link's page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from newsletter import i18n, links, subscriptions
from newsletter.tokens import ExpiredToken, UnknownToken
from newsletter.web.deps import SessionDep, SettingsDep, TokensDep
from newsletter.web.pages import client_ip, list_context, message, not_found, site_context
from newsletter.web.public import schema
from newsletter.web.public.archive import latest_issue
from newsletter.web.public.subscribe import on_commit, start_committed_sequences
from newsletter.web.public.unsubscribe import unsubscribed_page

router = APIRouter()


_ANSWERS = schema.page(
    {
        200: schema.answer("Subscribed; or, after an unsubscribe, the way back", schema.HTML),
        410: schema.answer("The confirmation link has expired", schema.HTML),
    }
)


@router.get(f"{links.CONFIRM}{{token}}", response_model=None, responses=_ANSWERS)
def confirm(token: str, request: Request, session: SessionDep, tokens: TokensDep, settings: SettingsDep) -> Response:
    try:
        subscription = subscriptions.confirm(session, tokens, token=token, ip=client_ip(request))
    except ExpiredToken:
        return message(
            request,
            i18n.N_("This confirmation link has expired"),
            i18n.N_("Confirmation links work for 7 days. Please subscribe again to get a fresh one."),
            status_code=410,
            **site_context(request, session),
        )
    except subscriptions.LeftTheList as left:
        # The confirmation mail is older than the unsubscribe: say so, and offer the way back as a POST
        # (link scanners open every GET).
        gone = left.subscription
        unsubscribe = links.unsubscribe_url(
            "", tokens, gone.subscriber_id, gone.list_id, bound_to=gone.subscriber.created_at
        )
        return unsubscribed_page(
            request, tokens, unsubscribe.removeprefix(links.UNSUBSCRIBE), gone, i18n.N_("You left this list")
        )
    except UnknownToken:
        return not_found(request, session)
    mailing_list = subscription.mailing_list
    confirmed_id = subscription.id
    on_commit(session, lambda: setattr(request.state, "committed_sequence", confirmed_id))
    response = message(
        request,
        i18n.N_("You are subscribed"),
        i18n.N_("Thank you for confirming. %(email)s will receive %(list)s."),
        i18n.N_("Every email has a link to unsubscribe in one click or to change your preferences."),
        values={"email": subscription.subscriber.email, "list": mailing_list.name},
        link={
            "href": links.preferences_url(
                settings.base_url, tokens, subscription.subscriber_id, bound_to=subscription.subscriber.created_at
            ),
            "label": i18n.N_("Your preferences"),
        },
        latest=latest_issue(session, mailing_list.id),
        **list_context(mailing_list, request, subscription.subscriber),
    )
    response.background = BackgroundTask(start_committed_sequences, request)
    return response
