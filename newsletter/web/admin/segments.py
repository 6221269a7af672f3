"""/admin/segments: saved filters — the list (each count on demand), a new one, one to edit with a JSON
textarea and a live count (htmx, debounced), delete with a confirmation. Editors read and count them
(they choose one when sending); only admins create, change or delete, as in the API.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from newsletter import segments
from newsletter.errors import Invalid, NotFound
from newsletter.models import Segment
from newsletter.segments.filters import MAX_FILTER_CHARS
from newsletter.web.admin.auth import Admin, Editor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.api.params import RowId
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
SEGMENTS = "/admin/segments"
Name = Annotated[str, Form(max_length=segments.NAME_LENGTH * 2)]
Description = Annotated[str, Form(max_length=segments.DESCRIPTION_LENGTH)]
FilterText = Annotated[str, Form(alias="filter", max_length=MAX_FILTER_CHARS)]
EXAMPLE = {"all": [{"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}, {"not_opened": {"last": 3}}]}


def _segment(session: Any, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFound(f"no segment {segment_id}")
    return segment


def _editor(
    request: Request,
    *,
    segment: Segment | None,
    name: str,
    description: str,
    filter_text: str,
    errors: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "segments/edit.html",
        title=f"Segment “{segment.name}”" if segment else "New segment",
        segment=segment,
        name=name,
        description=description,
        filter_text=filter_text,
        errors=errors or {},
        status_code=422 if errors else 200,
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@router.get(SEGMENTS)
def segment_list(request: Request, session: SessionDep, me: Editor) -> Response:
    return render(request, "segments/list.html", title="Segments", segments=segments.list_segments(session))


@router.get(SEGMENTS + "/new")
def new_segment(request: Request, me: Admin) -> Response:
    return _editor(request, segment=None, name="", description="", filter_text=_pretty(EXAMPLE))


@router.post(SEGMENTS + "/count")
def count_fragment(request: Request, session: SessionDep, me: Editor, filter_text: FilterText = "") -> Response:
    """The live count under the textarea (htmx posts the form as it is typed): a number, or what is wrong."""
    try:
        return render(request, "segments/_count.html", count=segments.count(session, filter_text), error=None)
    except Invalid as exc:
        return render(request, "segments/_count.html", count=None, error=str(exc))


@router.get(SEGMENTS + "/{segment_id}/count")
def saved_count(request: Request, session: SessionDep, me: Editor, segment_id: RowId) -> Response:
    segment = _segment(session, segment_id)
    count = segments.count(session, segment.filter)
    return render(request, "segments/_count.html", count=count, error=None, short=True)


def _errors_of(exc: Invalid) -> dict[str, str]:
    message = str(exc)
    if isinstance(exc, segments.InvalidFilter):
        return {"filter": message}
    field = "description" if message.startswith("description") else "name"
    return {field: message}


@router.post(SEGMENTS + "/new")
def create(
    request: Request, session: SessionDep, me: Admin, name: Name = "", description: Description = "",
    filter_text: FilterText = "",
) -> Response:  # fmt: skip
    try:
        segment = segments.create(session, name, filter_text, description=description, created_by=me.name)
    except (Invalid, segments.SegmentExists) as exc:
        session.rollback()
        errors = _errors_of(exc) if isinstance(exc, Invalid) else {"name": str(exc)}
        return _editor(request, segment=None, name=name, description=description, filter_text=filter_text,
                       errors=errors)  # fmt: skip
    return redirect(request, f"{SEGMENTS}/{segment.id}", flash=f"Segment “{segment.name}” saved.")


@router.get(SEGMENTS + "/{segment_id}")
def edit(request: Request, session: SessionDep, me: Editor, segment_id: RowId) -> Response:
    segment = _segment(session, segment_id)
    return _editor(request, segment=segment, name=segment.name, description=segment.description,
                   filter_text=_pretty(segment.filter))  # fmt: skip


@router.post(SEGMENTS + "/{segment_id}")
def save(
    request: Request, session: SessionDep, me: Admin, segment_id: RowId, name: Name = "",
    description: Description = "", filter_text: FilterText = "",
) -> Response:  # fmt: skip
    segment = _segment(session, segment_id)
    try:
        segments.update(session, segment.name, new_name=name, raw_filter=filter_text, description=description,
                        updated_by=me.name)  # fmt: skip
    except (Invalid, segments.SegmentExists) as exc:
        session.rollback()
        errors = _errors_of(exc) if isinstance(exc, Invalid) else {"name": str(exc)}
        return _editor(request, segment=_segment(session, segment_id), name=name, description=description,
                       filter_text=filter_text, errors=errors)  # fmt: skip
    return redirect(
        request, f"{SEGMENTS}/{segment_id}", flash="Saved. Campaigns created before keep the filter they had."
    )


@router.post(SEGMENTS + "/{segment_id}/delete")
def delete(request: Request, session: SessionDep, me: Admin, segment_id: RowId) -> Response:
    segment = _segment(session, segment_id)
    segments.delete(session, segment.name)
    return redirect(request, SEGMENTS, flash=f"Segment “{segment.name}” deleted.")
