"""Admin API: the suppression list — list, add, remove (removals are logged with who did it)."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from newsletter import audit, suppressions
from newsletter.models import Suppression, SuppressionReason
from newsletter.web.api.deps import Admin, AdminActor
from newsletter.web.api.errors import NOT_FOUND, ApiRoute
from newsletter.web.api.params import Cursor, csv_body, csv_upload
from newsletter.web.api.schemas import (
    NO_NUL,
    BlockedDomainIn,
    BlockedDomainOut,
    DomainBlocked,
    ImportErrorOut,
    SuppressionAdded,
    SuppressionImportOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
)
from newsletter.web.deps import SessionDep

router = APIRouter(tags=["suppressions"], route_class=ApiRoute)


def suppression_out(s: Suppression) -> SuppressionOut:
    return SuppressionOut.model_validate(s, from_attributes=True)


@router.get("/suppressions", summary="Suppressed addresses, a page at a time")
def list_suppressions(
    session: SessionDep,
    _: Admin,
    reason: SuppressionReason | None = None,
    email: Annotated[str | None, Query(max_length=320, description="Substring, or an exact erased address.")] = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 100,
) -> SuppressionPage:
    page = suppressions.list_suppressions(session, reason=reason, email=email, after=after, limit=limit)
    return SuppressionPage(items=[suppression_out(s) for s in page.items], next_cursor=page.next_cursor)


@router.post("/suppressions", status_code=201, summary="Never mail this address (idempotent)")
def add(body: SuppressionIn, session: SessionDep, who: AdminActor, response: Response) -> SuppressionAdded:
    suppression, created = suppressions.add(session, body.email, detail=body.detail)
    if created:
        audit.record(session, who, "suppression.add", f"address:{suppression.email}")
    if not created:
        response.status_code = 200
    return SuppressionAdded(suppression=suppression_out(suppression), created=created)


@router.post(
    "/suppressions/import",
    summary="Suppress every address of a CSV file (an `email` column, or one address per line)",
    openapi_extra=csv_body("UTF-8 (with or without BOM); e.g. the bounce or unsubscribe export of another tool."),
)
async def import_csv(
    request: Request,
    session: SessionDep,
    who: AdminActor,
    detail: Annotated[str | None, Query(max_length=1000, pattern=NO_NUL, description="Why, for the record.")] = None,
) -> SuppressionImportOut:
    async with csv_upload(request) as upload:
        text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
        try:
            result = await run_in_threadpool(suppressions.add_csv, session, text, detail=detail)
        except UnicodeDecodeError as error:
            raise HTTPException(422, f"the file is not UTF-8 text (byte {error.start}); nothing was added") from None
    audit.record(session, who, "suppression.add", None, added=result.added, already=result.already)
    session.commit()
    return SuppressionImportOut(
        added=result.added,
        already=result.already,
        errors=[ImportErrorOut(line=line, reason=reason) for line, reason in result.errors or []],
    )


@router.get("/suppressions/domains", summary="The domain blocklist: domains never subscribed nor mailed")
def list_domains(session: SessionDep, _: Admin) -> list[BlockedDomainOut]:
    return [
        BlockedDomainOut(domain=d.domain, detail=d.detail, created_at=d.created_at)
        for d in suppressions.blocked_domains(session)
    ]


@router.post("/suppressions/domains", status_code=201, summary="Block a whole domain, e.g. *@mailinator.com")
def block_domain(body: BlockedDomainIn, session: SessionDep, who: AdminActor, response: Response) -> DomainBlocked:
    entry, created = suppressions.block_domain(session, body.domain, detail=body.detail)
    if created:
        audit.record(session, who, "blocked_domain.add", f"domain:{entry.domain}")
    if not created:
        response.status_code = 200
    return DomainBlocked(
        domain=BlockedDomainOut(domain=entry.domain, detail=entry.detail, created_at=entry.created_at),
        created=created,
    )


@router.delete(
    "/suppressions/domains/{domain}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Allow a blocked domain again (logged)",
)
def unblock_domain(
    session: SessionDep, who: AdminActor, domain: str = Path(max_length=255, pattern=NO_NUL)
) -> Response:
    suppressions.unblock_domain(session, domain, by=who.name)
    audit.record(session, who, "blocked_domain.remove", f"domain:{suppressions.normalise_domain(domain)}")
    return Response(status_code=204)


@router.delete(
    "/suppressions/{email}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Allow mail to an address again (logged)",
)
def remove(session: SessionDep, who: AdminActor, email: str = Path(max_length=320)) -> Response:
    suppressions.remove(session, email, by=who.name)
    audit.record(session, who, "suppression.remove", f"address:{email.strip().lower()}")
    return Response(status_code=204)
