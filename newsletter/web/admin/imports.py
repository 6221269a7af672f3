"""/admin/imports: the import wizard — upload a CSV (streamed to a file), see its first rows with the
delimiter and the columns that become attributes, choose the list and the options, then watch the
import run in the background (a Celery task, or a thread in embedded mode; never in the request) and
read its report, with every bad line downloadable as CSV. Past imports are listed with their reports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from newsletter import audit, import_jobs, imports, lists
from newsletter.exports import neutralise
from newsletter.models import ImportJob, ImportStatus
from newsletter.web.admin.auth import Admin, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render, security_headers
from newsletter.web.api.deps import JobQueue
from newsletter.web.api.params import RowId
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
IMPORTS = "/admin/imports"
POLL_SECONDS = 1


def _index(request: Request, session: Session, *, error: str | None = None, chosen: str = "") -> Response:
    return render(
        request,
        "imports/index.html",
        status_code=422 if error else 200,
        title="Imports",
        jobs=import_jobs.recent_jobs(session),
        lists={m.id: m for m in lists.all_lists(session)},
        error=error,
        chosen=chosen,
        max_mib=request.app.state.settings.max_upload_bytes // 2**20,
    )


@router.get(IMPORTS)
def index(
    request: Request, session: SessionDep, me: Admin, list: Annotated[str, Query(max_length=100)] = ""
) -> Response:
    return _index(request, session, chosen=list)


@router.post(IMPORTS)
async def upload(request: Request, session: SessionDep, settings: SettingsDep, me: Admin) -> Response:
    """Step 1: the file (the body cap is MAX_UPLOAD_BYTES; Starlette spools it to disk as it arrives)."""
    form = await request.form()
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            return _index(request, session, error="Choose a CSV file to import.")
        file.file.seek(0)
        path, size = await run_in_threadpool(import_jobs.store_upload, settings.import_dir, file.file)
        filename = file.filename
    finally:
        await form.close()  # the spooled upload: its copy is what the job reads
    try:
        job = import_jobs.create_job(session, path, filename=filename, size=size, created_by=me.name)
    except imports.InvalidCsv as exc:
        return _index(request, session, error=f"This file cannot be imported: {exc}.")
    chosen = str(form.get("list", ""))[:100]
    return redirect(request, f"{IMPORTS}/{job.id}" + (f"?list={chosen}" if chosen else ""))


def _progress_context(job: ImportJob) -> dict[str, Any]:
    return {
        "job": job,
        "percent": import_jobs.percent(job),
        "live": job.status in (ImportStatus.queued, ImportStatus.running),
        "stage": import_jobs.live_progress(job).stage or job.status.value,
        "poll_seconds": POLL_SECONDS,
    }


@router.get(IMPORTS + "/{job_id}")
def job_page(
    request: Request,
    session: SessionDep,
    me: Admin,
    job_id: RowId,
    list: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    job = import_jobs.get_job(session, job_id)
    every = lists.all_lists(session)
    return render(
        request,
        "imports/job.html",
        title=f"Import of {job.filename}",
        preview=import_jobs.preview_of(job) if job.status == ImportStatus.uploaded else None,
        lists=every,
        list_name={m.id: m.name for m in every}.get(job.list_id or 0, "a deleted list"),
        chosen=list,
        errors={},
        bad=import_jobs.report_rows(job)[:200],
        **_progress_context(job),
    )


@router.post(IMPORTS + "/{job_id}/run")
async def run(
    request: Request, session: SessionDep, settings: SettingsDep, jobs: JobQueue, me: Admin, job_id: RowId
) -> Response:
    """Step 2: the choices; the import starts once they are committed."""
    form = await request.form()
    slug = str(form.get("list", ""))[:100]
    try:
        job = import_jobs.queue(
            session,
            job_id,
            list_slug=slug,
            confirmed=form.get("consent") == "confirmed",
            update_existing=form.get("existing") != "skip",
        )
    except lists.ListNotFound:
        job = import_jobs.get_job(session, job_id)
        return render(
            request,
            "imports/job.html",
            status_code=422,
            title=f"Import of {job.filename}",
            preview=import_jobs.preview_of(job),
            lists=lists.all_lists(session),
            list_name="",
            chosen=slug,
            errors={"list": "Choose the list these people join."},
            bad=[],
            **_progress_context(job),
        )
    details = {"job": job_id, "file": job.filename, "confirmed": job.confirmed, "update_existing": job.update_existing}
    audit.record(session, actor(request, me), "import.run", f"list:{slug}", **details)
    session.commit()  # the background import must see the job queued
    jobs.run_import(job_id, request.app.state.sessions, embedded=settings.broker_url is None)
    return redirect(request, f"{IMPORTS}/{job_id}", flash="The import has started; this page shows its progress.")


@router.get(IMPORTS + "/{job_id}/progress")
def progress(request: Request, session: SessionDep, me: Admin, job_id: RowId) -> Response:
    """The progress bar alone, polled by htmx; once the import ended the whole page reloads (the report)."""
    job = import_jobs.get_job(session, job_id)
    response = render(request, "imports/_progress.html", **_progress_context(job))
    if job.status in (ImportStatus.finished, ImportStatus.failed):
        response.headers["HX-Refresh"] = "true"
    return response


@router.get(IMPORTS + "/{job_id}/errors.csv")
def bad_lines(session: SessionDep, me: Admin, job_id: RowId) -> StreamingResponse:
    rows = import_jobs.report_rows(import_jobs.get_job(session, job_id))

    def lines() -> Iterator[str]:
        sink = io.StringIO()
        writer = csv.writer(sink, lineterminator="\r\n")
        writer.writerow(["line", "reason", "content"])
        for row in rows:
            writer.writerow([str(row["line"]), neutralise(row["reason"]), neutralise(row["text"])])
        yield sink.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={**security_headers(), "Content-Disposition": f'attachment; filename="import-{job_id}-bad-lines.csv"'},
    )
