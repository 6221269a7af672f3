"""The admin web UI under /admin: one router assembled from one module per page family.

`install(app)` adds it to the app (unless NEWSLETTER_ADMIN_ENABLED=false): the templates and sign-in
limits on app.state, the handlers that turn "sign in first" into a 303 and refusals into the 403 page,
and the routers. A new page family is a module with a `router` (an `APIRouter(route_class=AdminRoute)`)
added to `PAGE_FAMILIES`, and an entry in `render.NAV`.

Modules: `auth` (the Editor/Admin dependencies, CSRF), `render` (templates, headers, flash, redirect),
`signin`, `dashboard`, `account`, `digests` (+ `digest_form`), `webhooks` (outgoing webhooks, admins only).
"""

from __future__ import annotations

from types import ModuleType
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from newsletter.web.admin import (
    account,
    audit_log,
    bounces_page,
    campaigns,
    dashboard,
    digests,
    imports,
    lists,
    people,
    segments,
    sendflow,
    sequences,
    settings_page,
    signin,
    subscribers,
    suppressions,
    templates_page,
    two_factor,
    webhooks,
)
from newsletter.web.admin.auth import (
    SIGN_IN,
    TWO_FACTOR,
    Editor,
    EnrolmentRequired,
    PageForbidden,
    SignInRequired,
    clear_session_cookie,
)
from newsletter.web.admin.errors import AdminRoute, error_page
from newsletter.web.admin.render import AdminPages, redirect
from newsletter.web.assets import Assets

# sendflow's /new before campaigns' /{id}
PAGE_FAMILIES: tuple[ModuleType, ...] = (
    signin, dashboard, account, digests, sendflow, campaigns, two_factor, people, audit_log, settings_page,
    bounces_page, templates_page,
)  # fmt: skip
PAGE_FAMILIES += (lists, subscribers, imports, suppressions, segments, sequences, webhooks)

router = APIRouter(include_in_schema=False, route_class=AdminRoute)
for module in PAGE_FAMILIES:
    router.include_router(module.router)


@router.api_route("/admin/{rest:path}", methods=["GET", "POST"])
def unknown_page(request: Request, me: Editor) -> Response:
    # Last: any /admin URL no page family claimed answers with the admin's own 404 page (after sign-in, so
    # strangers learn nothing about which pages exist).
    return error_page(request, 404, "There is no such page", "The address may be mistyped, or the page was moved.")


def install(app: FastAPI, assets: Assets) -> None:
    settings = app.state.settings
    app.state.admin_pages = AdminPages(assets, settings)
    app.state.sign_in_throttles = signin.SignInThrottles.from_settings(settings)

    @app.exception_handler(SignInRequired)
    def _sign_in_first(request: Request, exc: SignInRequired) -> Response:
        response = redirect(request, f"{SIGN_IN}?{urlencode({'next': exc.next_path})}")
        clear_session_cookie(response, settings)  # an ended session's cookie is of no use any more
        return response

    @app.exception_handler(EnrolmentRequired)
    def _enrol_first(request: Request, exc: EnrolmentRequired) -> Response:
        flash = "Admins here must use two-factor sign-in: set it up to carry on."
        return redirect(request, TWO_FACTOR, flash=flash, kind="info")

    @app.exception_handler(PageForbidden)
    def _forbidden(request: Request, exc: PageForbidden) -> Response:
        return error_page(request, 403, "You cannot do this here", exc.message)

    app.include_router(router)
