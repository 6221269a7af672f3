"""The OpenAPI entries of the public pages: what each accepts and what it can answer.

The pages read their bodies themselves (`pages.read_body`, capped, parsed like a browser's form), so FastAPI
sees no body parameter to describe; these entries say what a browser, an embedding site or a mailbox
provider sends, and every status and media type that comes back, including those of the edge (a NUL in
the path or query, a body over the limit). /docs shows them, and the fuzz of tests/test_web_fuzz.py
generates its requests from them and checks the answers against them.
"""

from __future__ import annotations

from typing import Any

HTML, TEXT, JSON = "text/html", "text/plain", "application/json"
Answers = dict[int | str, dict[str, Any]]


def answer(description: str, *media_types: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {} for media_type in media_types}}


# What the edge answers before any route: RefuseNul (a NUL in the path is a 404, in the query a 422).
_EDGE: Answers = {
    # HTML: the page's own answer; text: a NUL in the path; JSON: no route at all (an escaped / in a segment)
    404: answer("Not found (the page's own answer, a NUL character in the path, or no such route)", HTML, TEXT, JSON),
    422: answer("A query parameter contains a NUL character", TEXT),
}
# ... and BodyLimit (a body over NEWSLETTER_MAX_BODY_BYTES), for the routes that take one.
_WITH_BODY: Answers = {
    **_EDGE,
    413: answer("The body is larger than the public forms accept", JSON),
}


def page(more: Answers | None = None) -> Answers:
    """The `responses` of a page: the edge's answers and `more`; a status in both may be either's media type."""
    return _with(_EDGE, more or {})


def form_route(more: Answers | None = None) -> Answers:
    """As `page`, for a route that reads a body."""
    return _with(_WITH_BODY, more or {})


def _with(edge: Answers, more: Answers) -> Answers:
    merged = {**edge, **more}
    for code in edge.keys() & more.keys():
        content = {**edge[code]["content"], **more[code].get("content", {})}
        merged[code] = {"description": more[code]["description"], "content": content}
    return merged


def form_body(
    fields: dict[str, dict[str, Any]], *, json: dict[str, Any] | None = None, description: str = ""
) -> dict[str, Any]:
    """`openapi_extra` of a route that reads an urlencoded form (and, with `json`, also a JSON object)."""
    content: dict[str, Any] = {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": fields}},
    }
    if json is not None:
        content[JSON] = {"schema": {"type": "object", "properties": json}}
    return {"requestBody": {"required": False, "description": description, "content": content}}


def text_field(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **schema}


SUBSCRIBE_BODY = form_body(
    {
        "email": text_field("The address to subscribe"),
        "name": text_field("How the emails greet them (optional)"),
        "website": text_field("The honeypot: left empty by people, who never see it"),
        "attr.city": text_field("One of the list's extra form fields, `attr.` and its name"),
        "language": text_field("The reader's language for pages and emails: en, ru, kk (optional)"),
    },
    json={
        "email": text_field("The address to subscribe"),
        "name": text_field("How the emails greet them (optional)"),
        "language": text_field("The reader's language for pages and emails: en, ru, kk (optional)"),
        "attributes": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "The list's extra form fields",
        },
    },
    description="The subscribe form, or the embeddable JSON variant (Content-Type: application/json).",
)
SUBSCRIBE_ANSWERS = form_route(
    {
        200: answer("Subscribed, or a confirmation email is on its way (the same answer for any address)", HTML, JSON),
        400: answer("The address, the name or an extra field cannot be used: the form again, saying why", HTML, JSON),
        404: answer("No such public list (or a NUL character in the path)", HTML, JSON),
        429: answer("Too many attempts from this network", HTML, JSON),
    }
)
ONE_CLICK_BODY = form_body(
    {
        "List-Unsubscribe": text_field(
            "`One-Click`: RFC 8058, sent by mailbox providers; anything else is the page's button",
            examples=["One-Click"],
        )
    },
    description="RFC 8058 one-click (`List-Unsubscribe=One-Click`), or the unsubscribe page's button.",
)
ONE_CLICK_ANSWERS = form_route(
    {
        200: answer("Unsubscribed (plain text for one-click, the page for the button)", HTML, TEXT),
        404: answer("The link is not valid (plain text for one-click); nothing changed", HTML, TEXT),
    }
)
PREFERENCES_BODY = form_body(
    {
        "name": text_field("The name to greet them by"),
        "language": text_field("The reader's language (en, ru, kk); empty: the newsletter's"),
        "list": {"type": "array", "items": {"type": "string"}, "description": "Ids of the lists to stay on"},
        "section.1": {"type": "array", "items": {"type": "string"}, "description": "Sections wanted of list 1"},
        "action": text_field("`unsubscribe_all` leaves every list", examples=["unsubscribe_all"]),
    },
    description="The preferences form.",
)
PREFERENCES_ANSWERS = form_route(
    {
        200: answer("The preferences page, saying what was saved", HTML),
        400: answer("Nothing saved: the page again, saying why", HTML),
    }
)
HEALTH_ANSWERS: Answers = {
    200: answer("Healthy: {status: ok}, and with an admin token each part's state", JSON),
    503: answer("A part is down: {status: unavailable}, and with an admin token which and how", JSON),
    422: _EDGE[422],
}
