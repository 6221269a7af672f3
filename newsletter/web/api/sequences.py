"""Admin API: a list's welcome and follow-up emails (editors may read them and preview a step)."""

from __future__ import annotations

import builtins
import datetime as dt

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter import sequences
from newsletter.models import EmailSequence
from newsletter.web.api.deps import Admin, Editor
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute
from newsletter.web.api.params import SlugPath
from newsletter.web.api.schemas import NO_NUL
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["sequences"], route_class=ApiRoute)

Position = Path(ge=1, le=1000, description="The step's number, 1 for the first.")


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(pattern=NO_NUL, max_length=sequences.SUBJECT_CHARS)
    body: str = Field(pattern=NO_NUL, max_length=sequences.MAX_BODY_CHARS, description="Markdown.")
    delay_hours: int = Field(0, ge=0, le=sequences.MAX_DELAY_HOURS, description="After the previous step.")
    template: str | None = Field(None, pattern=NO_NUL, max_length=100, description="An uploaded MJML template's name.")


class StepPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str | None = Field(None, pattern=NO_NUL, max_length=sequences.SUBJECT_CHARS)
    body: str | None = Field(None, pattern=NO_NUL, max_length=sequences.MAX_BODY_CHARS)
    delay_hours: int | None = Field(None, ge=0, le=sequences.MAX_DELAY_HOURS)
    template: str | None = Field(
        None, pattern=NO_NUL, max_length=100, description="null: back to the bundled template."
    )


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: int = Field(ge=1, le=1000)


class SequenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    list: str = Field(pattern=NO_NUL, max_length=100, description="The list's slug.")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(pattern=NO_NUL, max_length=sequences.SUBJECT_CHARS)
    body: str = Field(pattern=NO_NUL, max_length=sequences.MAX_BODY_CHARS)


class StepOut(BaseModel):
    position: int
    subject: str
    body: str
    delay_hours: int
    campaign_id: int
    counts: dict[str, int] = Field(description="The step's messages per ledger status.")


class SequenceOut(BaseModel):
    list: str
    enabled: bool
    enabled_at: dt.datetime | None = Field(description="Subscribers confirmed since then get the steps.")
    steps: builtins.list[StepOut]  # `list` is a field here


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


def sequence_out(session: SessionDep, sequence: EmailSequence) -> SequenceOut:
    counts = {s.position: s.counts for s in sequences.status(session, sequence.mailing_list.slug)}
    return SequenceOut(
        list=sequence.mailing_list.slug,
        enabled=sequence.enabled,
        enabled_at=sequence.enabled_at,
        steps=[
            StepOut(
                position=s.position,
                subject=s.subject,
                body=s.body,
                delay_hours=s.delay_hours,
                campaign_id=s.campaign_id,
                counts=counts[s.position],
            )
            for s in sequence.steps
        ],
    )


def _fresh(session: SessionDep, slug: str) -> SequenceOut:
    session.expire_all()
    return sequence_out(session, sequences.get_sequence(session, slug))


@router.get("/sequences", summary="Every list's sequence with its steps")
def list_sequences(session: SessionDep, _: Editor) -> list[SequenceOut]:
    return [sequence_out(session, s) for s in sequences.all_sequences(session)]


@router.post("/sequences", status_code=201, responses={**NOT_FOUND, **CONFLICT}, summary="Create a list's sequence")
def create_sequence(body: SequenceIn, session: SessionDep, _: Admin) -> SequenceOut:
    sequences.create_sequence(session, body.list)
    return _fresh(session, body.list)


@router.get("/sequences/{slug}", responses=NOT_FOUND, summary="A list's sequence, its steps and their sent counts")
def get_sequence(session: SessionDep, _: Editor, slug: SlugPath) -> SequenceOut:
    return sequence_out(session, sequences.get_sequence(session, slug))


@router.post("/sequences/{slug}/steps", status_code=201, responses=NOT_FOUND, summary="Append a step")
def add_step(body: StepIn, session: SessionDep, settings: SettingsDep, _: Admin, slug: SlugPath) -> SequenceOut:
    sequences.add_step(session, settings, slug, **body.model_dump())
    return _fresh(session, slug)


@router.patch(
    "/sequences/{slug}/steps/{position}",
    responses=NOT_FOUND,
    summary="Change a step (those who got it are not sent it again)",
)
def edit_step(
    body: StepPatch, session: SessionDep, settings: SettingsDep, _: Admin, slug: SlugPath, position: int = Position
) -> SequenceOut:
    changes = body.model_dump(exclude_unset=True)
    default_template = "template" in changes and changes["template"] is None
    sequences.edit_step(
        session,
        settings,
        slug,
        position,
        subject=changes.get("subject"),
        body=changes.get("body"),
        delay_hours=changes.get("delay_hours"),
        template=changes.get("template"),
        default_template=default_template,
    )
    return _fresh(session, slug)


@router.delete(
    "/sequences/{slug}/steps/{position}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Remove a step (its unsent messages are skipped)",
)
def remove_step(session: SessionDep, _: Admin, slug: SlugPath, position: int = Position) -> Response:
    sequences.remove_step(session, slug, position)
    return Response(status_code=204)


@router.post("/sequences/{slug}/steps/{position}/move", responses=NOT_FOUND, summary="Move a step in the order")
def move_step(body: MoveIn, session: SessionDep, _: Admin, slug: SlugPath, position: int = Position) -> SequenceOut:
    sequences.move_step(session, slug, position, body.to)
    return _fresh(session, slug)


@router.post(
    "/sequences/{slug}/enable",
    responses={**NOT_FOUND, **CONFLICT},
    summary="Turn on: subscribers confirmed from now on get the steps (not the existing list, nor imports)",
)
def enable(session: SessionDep, _: Admin, slug: SlugPath) -> SequenceOut:
    sequences.enable(session, slug)
    return _fresh(session, slug)


@router.post("/sequences/{slug}/disable", responses=NOT_FOUND, summary="Turn off: unsent messages are skipped")
def disable(session: SessionDep, _: Admin, slug: SlugPath) -> SequenceOut:
    sequences.disable(session, slug)
    return _fresh(session, slug)


@router.post("/sequences/{slug}/preview", responses=NOT_FOUND, summary="Render a step as subscribers would get it")
def preview(body: PreviewIn, session: SessionDep, _: Editor, slug: SlugPath) -> PreviewOut:
    rendered = sequences.preview(session, slug, subject=body.subject, body=body.body)
    return PreviewOut(subject=rendered.subject, html=rendered.html, text=rendered.text)
