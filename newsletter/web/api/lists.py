"""Admin API: mailing lists (editors may read them), CSV import and export of their subscribers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncGenerator, Iterator
from typing import IO, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from newsletter import imports, lists
from newsletter.models import MailingList
from newsletter.subscribers import Search
from newsletter.web.api.deps import Admin, Db, Editor, JobQueue
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute, described
from newsletter.web.api.schemas import SLUG_PATTERN, Counts, ImportReportOut, ListIn, ListOut, ListPatch

router = APIRouter(tags=["lists"], route_class=ApiRoute)
Slug = Path(pattern=SLUG_PATTERN)
UPLOAD_MEMORY = 4 * 1024 * 1024  # larger uploads spill to a temporary file
MAX_UPLOAD = 512 * 1024 * 1024  # a CSV of several million subscribers; anything larger is refused with 413
_CHUNK = 64 * 1024


async def read_upload(request: Request, spool: IO[bytes], part: IO[bytes]) -> IO[bytes]:
    """The uploaded file: a raw body (`text/csv`, `--data-binary @people.csv`) in `spool`, or the `file`
    field of a multipart form (`-F file=@people.csv`, how every HTTP client uploads files) copied to
    `part`; streamed to these temporary files and refused beyond MAX_UPLOAD. Positioned at the start."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD:
        raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD // 2**20} MiB")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD // 2**20} MiB")
        spool.write(chunk)
    spool.seek(0)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return spool

    async def body() -> AsyncGenerator[bytes, None]:
        while chunk := spool.read(_CHUNK):
            yield chunk

    try:
        form = await MultiPartParser(request.headers, body(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise HTTPException(422, f"not a valid multipart upload: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "the multipart upload has no 'file' field: send it as -F file=@people.csv")
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, part, _CHUNK)
    finally:
        await form.close()
    part.seek(0)
    return part


def list_out(session: Db, mailing_list: MailingList) -> ListOut:
    counts = lists.subscription_counts(session, mailing_list.id)
    return ListOut(
        id=mailing_list.id,
        slug=mailing_list.slug,
        name=mailing_list.name,
        description=mailing_list.description,
        from_email=mailing_list.from_email,
        from_name=mailing_list.from_name,
        reply_to=mailing_list.reply_to,
        opt_in=mailing_list.opt_in,
        visibility=mailing_list.visibility,
        postal_address=mailing_list.postal_address,
        tracking=mailing_list.tracking,
        theme=mailing_list.theme or {},
        counts=Counts(**counts),
        created_at=mailing_list.created_at,
    )


@router.get("/lists", summary="Every list with its subscription counts")
def list_lists(session: Db, _: Editor) -> list[ListOut]:
    return [list_out(session, m) for m in lists.all_lists(session)]


@router.post("/lists", status_code=201, summary="Create a list")
def create_list(body: ListIn, session: Db, _: Admin) -> ListOut:
    mailing_list = lists.create_list(
        session,
        slug=body.slug,
        name=body.name,
        from_email=body.from_email,
        from_name=body.from_name,
        reply_to=body.reply_to or None,
        description=body.description,
        opt_in=body.opt_in,
        visibility=body.visibility,
        postal_address=body.postal_address,
        tracking=body.tracking,
        theme=body.theme.model_dump(exclude_none=True) if body.theme else None,
    )
    return list_out(session, mailing_list)


@router.get("/lists/{slug}", responses=NOT_FOUND, summary="One list with its subscription counts")
def get_list(session: Db, _: Editor, slug: str = Slug) -> ListOut:
    return list_out(session, lists.get_list(session, slug))


@router.patch("/lists/{slug}", responses=NOT_FOUND, summary="Change some fields of a list")
def update_list(body: ListPatch, session: Db, _: Admin, slug: str = Slug) -> ListOut:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"theme"})
    if "theme" in body.model_fields_set:
        changes["theme"] = body.theme.model_dump(exclude_none=True) if body.theme else {}
    return list_out(session, lists.update_list(session, slug, **changes))


@router.delete(
    "/lists/{slug}",
    status_code=204,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Delete a list (refused once campaigns went to it)",
)
def delete_list(session: Db, _: Admin, slug: str = Slug) -> Response:
    lists.delete_list(session, slug)
    return Response(status_code=204)


@router.post(
    "/lists/{slug}/import",
    responses={**NOT_FOUND, 413: described("The upload is larger than 512 MiB.")},
    summary="Import subscribers from CSV (columns: email, name, any attributes)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
            "description": "UTF-8 (with or without BOM), comma or semicolon separated, header row first: the "
            "raw body, or the `file` field of a multipart form (`curl -F file=@people.csv`). At most 512 MiB.",
        }
    },
)
async def import_list(
    request: Request,
    session: Db,
    _: Admin,
    jobs: JobQueue,
    slug: str = Slug,
    confirmed: bool = Query(False, description="Consent was obtained elsewhere: subscribe as confirmed."),
    strict: bool = Query(False, description="Refuse the whole file if any row is bad."),
) -> ImportReportOut:
    with (
        tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY) as spool,
        tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY) as part,
    ):
        upload = await read_upload(request, spool, part)
        report = await run_in_threadpool(
            imports.import_csv,
            session,
            slug,
            upload,
            confirmed=confirmed,
            strict=strict,
        )
    list_id = lists.get_list(session, slug).id
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
    session: Db,
    _: Admin,
    slug: str = Slug,
    status: imports.ExportStatus = Query(
        "confirmed",
        description="Which subscriptions: `confirmed` (the default: the people the list mails), `pending`, "
        "`unsubscribed` or `all`. The file has a `status` column either way.",
    ),
) -> StreamingResponse:
    lists.get_list(session, slug)
    return csv_response(request, Search(list_slug=slug), f"{slug}.csv", status=status)


def csv_response(
    request: Request, search: Search, filename: str, status: imports.ExportStatus = "confirmed"
) -> StreamingResponse:
    """Stream an export; rows are read by a session of its own, as the request's ends before streaming."""
    factory = request.app.state.sessions

    def lines() -> Iterator[str]:
        with factory() as session:
            yield from imports.export_csv(session, search, status=status)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
