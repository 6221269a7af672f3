"""Admin API: segments — saved filters over subscribers; editors read and count them, admins write and export."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from newsletter import segments
from newsletter.models import Segment
from newsletter.web.api.deps import Admin, Editor
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute
from newsletter.web.api.schemas import NO_NUL, Strict
from newsletter.web.deps import SessionDep

router = APIRouter(tags=["segments"], route_class=ApiRoute)
SegmentName = Annotated[str, Path(min_length=1, max_length=segments.NAME_LENGTH, pattern=NO_NUL)]
FILTER_HELP = (
    'The filter (JSON), e.g. {"all": [{"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}, '
    '{"not_opened": {"last": 3}}]}. A bad part is a 422 naming it: filter.all[1].attribute: ...'
)


class SegmentIn(Strict):
    name: str = Field(min_length=1, pattern=NO_NUL, max_length=segments.NAME_LENGTH)
    description: str = Field("", pattern=NO_NUL, max_length=segments.DESCRIPTION_LENGTH)
    filter: dict[str, Any] = Field(description=FILTER_HELP)


class SegmentPatch(Strict):
    name: str | None = Field(None, min_length=1, pattern=NO_NUL, max_length=segments.NAME_LENGTH)
    description: str | None = Field(None, pattern=NO_NUL, max_length=segments.DESCRIPTION_LENGTH)
    filter: dict[str, Any] | None = Field(None, description=FILTER_HELP)


class FilterIn(Strict):
    filter: dict[str, Any] = Field(description=FILTER_HELP)


class SegmentOut(BaseModel):
    id: int
    name: str
    description: str
    filter: dict[str, Any]
    created_by: str | None
    updated_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SegmentCount(BaseModel):
    name: str | None = Field(description="The segment's name; null when an unsaved filter was counted.")
    count: int = Field(description="Subscribers the filter matches now, whatever their state.")


def segment_out(segment: Segment) -> SegmentOut:
    return SegmentOut.model_validate(segment, from_attributes=True)


@router.get("/segments", summary="All segments, by name")
def list_segments(session: SessionDep, _: Editor) -> list[SegmentOut]:
    return [segment_out(s) for s in segments.list_segments(session)]


@router.post("/segments", status_code=201, responses=CONFLICT, summary="Save a filter under a name")
def create(body: SegmentIn, session: SessionDep, user: Admin) -> SegmentOut:
    segment = segments.create(session, body.name, body.filter, description=body.description, created_by=user.name)
    return segment_out(segment)


@router.post("/segments/count", summary="Count the subscribers an unsaved filter matches (the editor's live count)")
def count_filter(body: FilterIn, session: SessionDep, _: Editor) -> SegmentCount:
    return SegmentCount(name=None, count=segments.count(session, body.filter))


@router.get("/segments/{name}", responses=NOT_FOUND, summary="One segment")
def get(session: SessionDep, _: Editor, name: SegmentName) -> SegmentOut:
    return segment_out(segments.get_segment(session, name))


@router.patch(
    "/segments/{name}", responses={**NOT_FOUND, **CONFLICT}, summary="Change a segment's name, description or filter"
)
def update(body: SegmentPatch, session: SessionDep, user: Admin, name: SegmentName) -> SegmentOut:
    segment = segments.update(
        session, name, new_name=body.name, raw_filter=body.filter, description=body.description, updated_by=user.name
    )
    return segment_out(segment)


@router.delete(
    "/segments/{name}", status_code=204, responses=NOT_FOUND, summary="Delete (campaigns keep the filter they used)"
)
def delete(session: SessionDep, _: Admin, name: SegmentName) -> Response:
    segments.delete(session, name)
    return Response(status_code=204)


@router.get("/segments/{name}/count", responses=NOT_FOUND, summary="How many subscribers the segment matches now")
def count(session: SessionDep, _: Editor, name: SegmentName) -> SegmentCount:
    segment = segments.get_segment(session, name)
    return SegmentCount(name=segment.name, count=segments.count(session, segment.filter))


@router.get(
    "/segments/{name}/export",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}},
    summary="The segment's members as CSV (email, name, attributes; spreadsheet-safe)",
)
def export(request: Request, session: SessionDep, _: Admin, name: SegmentName) -> StreamingResponse:
    segments.get_segment(session, name)  # a 404 now, not a broken stream later
    factory = request.app.state.sessions

    def lines() -> Iterator[str]:
        with factory() as reader:  # the request's session ends before the body streams
            yield from segments.export_csv(reader, name)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="segment.csv"'},
    )
