"""Admin API: mailing lists (editors may read them), CSV import and export of their subscribers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from newsletter import audit, exports, imports, lists, templates
from newsletter.models import MailingList
from newsletter.subscribers import Search
from newsletter.web.api.deps import AdminActor, Editor, JobQueue
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute, described
from newsletter.web.api.params import SlugPath, csv_body, csv_upload
from newsletter.web.api.schemas import Counts, ImportReportOut, ListIn, ListOut, ListPatch, row_fields
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["lists"], route_class=ApiRoute)


def list_out(session: SessionDep, mailing_list: MailingList) -> ListOut:
    counts = lists.subscription_counts(session, mailing_list.id)
    return ListOut(
        **row_fields(
            mailing_list, ListOut, exclude={"theme", "counts", "cors_origins", "form_fields", "default_template"}
        ),
        default_template=templates.default_name(session, mailing_list),
        cors_origins=mailing_list.cors_origins or [],
        form_fields=mailing_list.form_fields or [],
        theme=mailing_list.theme or {},
        counts=Counts(**counts),
    )


@router.get("/lists", summary="Every list with its subscription counts")
def list_lists(session: SessionDep, _: Editor) -> list[ListOut]:
    return [list_out(session, m) for m in lists.all_lists(session)]


@router.post("/lists", status_code=201, summary="Create a list")
def create_list(body: ListIn, session: SessionDep, settings: SettingsDep, who: AdminActor) -> ListOut:
    # ListIn's fields are create_list's arguments; an empty reply-to means none.
    mailing_list = lists.create_list(
        session,
        **body.model_dump(exclude={"reply_to", "theme", "tracking"}),
        tracking=settings.track_default if body.tracking is None else body.tracking,
        reply_to=body.reply_to or None,
        theme=body.theme.model_dump(exclude_none=True) if body.theme else None,
    )
    audit.record(session, who, "list.create", f"list:{mailing_list.slug}")
    return list_out(session, mailing_list)


@router.get("/lists/{slug}", responses=NOT_FOUND, summary="One list with its subscription counts")
def get_list(session: SessionDep, _: Editor, slug: SlugPath) -> ListOut:
    return list_out(session, lists.get_list(session, slug))


@router.patch(
    "/lists/{slug}",
    responses={404: described("No list with this slug, or no template named as `default_template`.")},
    summary="Change some fields of a list (its default template too)",
)
def update_list(body: ListPatch, session: SessionDep, who: AdminActor, slug: SlugPath) -> ListOut:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"theme", "form_fields", "default_template"})
    if body.form_fields is not None:
        changes["form_fields"] = [field.model_dump() for field in body.form_fields]
    if "theme" in body.model_fields_set:
        changes["theme"] = body.theme.model_dump(exclude_none=True) if body.theme else {}
    updated = lists.update_list(session, slug, **changes)
    if "default_template" in body.model_fields_set:
        # An unknown name is a 404 naming the template, as for a campaign's; the request then changes nothing.
        templates.set_list_default(session, slug, body.default_template or None)
        changes["default_template"] = body.default_template or None
    audit.record(session, who, "list.update", f"list:{slug}", fields=sorted(changes))
    return list_out(session, updated)


@router.delete(
    "/lists/{slug}",
    status_code=204,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Delete a list, its subscriptions and its welcome sequence (refused once campaigns went to it)",
    description="Removes the list's subscriptions (with their consent records) and its welcome sequence: the "
    "steps, their campaigns and the record of who was sent which step; steps not sent yet are never sent. "
    "Refused (409) once a digest's campaign went to the list. The subscribers stay, with their other lists.",
)
def delete_list(session: SessionDep, who: AdminActor, slug: SlugPath) -> Response:
    removed = lists.delete_list(session, slug)
    audit.record(
        session, who, "list.delete", f"list:{slug}",
        subscriptions=removed.subscriptions, sequence_steps=removed.sequence_steps,
    )  # fmt: skip
    return Response(status_code=204)


@router.post(
    "/lists/{slug}/import",
    responses={**NOT_FOUND, 413: described("The upload is larger than 512 MiB.")},
    summary="Import subscribers from CSV (columns: email, name, any attributes)",
    openapi_extra=csv_body("UTF-8 (with or without BOM), comma or semicolon separated, header row first."),
)
async def import_list(
    request: Request,
    session: SessionDep,
    who: AdminActor,
    jobs: JobQueue,
    slug: SlugPath,
    confirmed: bool = Query(False, description="Consent was obtained elsewhere: subscribe as confirmed."),
    strict: bool = Query(False, description="Refuse the whole file if any row is bad."),
) -> ImportReportOut:
    async with csv_upload(request) as upload:
        report = await run_in_threadpool(
            imports.import_csv,
            session,
            slug,
            upload,
            confirmed=confirmed,
            strict=strict,
        )
    list_id = lists.get_list(session, slug).id
    audit.record(session, who, "import.run", f"list:{slug}", imported=report.imported, updated=report.updated,
                 errors=report.error_count)  # fmt: skip
    session.commit()
    queued = bool(report.pending_confirmation) and jobs.send_import_confirmations(list_id)
    return ImportReportOut(**report.as_dict(), confirmation_emails_queued=queued)


@router.get(
    "/lists/{slug}/export",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}},
    summary="The list's subscribers as CSV (formula-looking cells neutralised)",
)
def export_list(
    request: Request,
    session: SessionDep,
    who: AdminActor,
    slug: SlugPath,
    status: exports.ExportStatus = Query(
        "confirmed",
        description="Which subscriptions: `confirmed` (the default: the people the list mails), `pending`, "
        "`unsubscribed` or `all`. The file has a `status` column either way.",
    ),
) -> StreamingResponse:
    lists.get_list(session, slug)
    audit.record(session, who, "export.run", f"list:{slug}", status=status)
    return csv_response(request, Search(list_slug=slug), f"{slug}.csv", status=status)


def csv_response(
    request: Request, search: Search, filename: str, status: exports.ExportStatus = "confirmed"
) -> StreamingResponse:
    """Stream an export; rows are read by a session of its own, as the request's ends before streaming."""
    factory = request.app.state.sessions

    def lines() -> Iterator[str]:
        with factory() as session:
            yield from exports.export_csv(session, search, status=status)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
