"""The API's documentation pages, served offline: Swagger UI at /docs and Redoc at /redoc, from the
vendored copies in newsletter/web/static/vendor/, and `/`, which leads to the admin (or the archive)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from newsletter import links
from newsletter.web.assets import assets

router = APIRouter(include_in_schema=False)

# Both render the OpenAPI document in the browser: Swagger UI sets inline styles and loads its icons as
# data: URLs; Redoc injects <style> elements and runs its search in a blob: worker. No other host.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_PAGE = Markup("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{head}
</head>
<body>
<div id="{root}" data-openapi="{openapi}"></div>
{scripts}
</body>
</html>
""")


def _page(title: str, root: str, head: Markup, scripts: list[str], openapi: str) -> HTMLResponse:
    tags = Markup("\n").join(Markup('<script src="{}"></script>').format(src) for src in scripts)
    html = _PAGE.format(title=title, head=head, root=root, scripts=tags, openapi=openapi)
    return HTMLResponse(str(html), headers=HEADERS)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    found = assets(request)
    head = Markup('<link rel="stylesheet" href="{}">').format(found.url("vendor/swagger-ui/swagger-ui.css"))
    scripts = [found.url("vendor/swagger-ui/swagger-ui-bundle.js"), found.url("docs/swagger-init.js")]
    return _page("newsletter API", "swagger-ui", head, scripts, request.app.openapi_url or "/openapi.json")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    found = assets(request)
    scripts = [found.url("vendor/redoc/redoc.standalone.js"), found.url("docs/redoc-init.js")]
    return _page("newsletter API", "redoc", Markup(""), scripts, request.app.openapi_url or "/openapi.json")


@router.get("/")
def home(request: Request) -> Response:
    enabled = request.app.state.settings.admin_enabled
    return RedirectResponse("/admin" if enabled else links.ARCHIVE, status_code=303)
