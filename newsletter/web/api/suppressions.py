"""Admin API: the suppression list — list, add, remove (removals are logged with who did it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from newsletter import suppressions
from newsletter.models import Suppression, SuppressionReason
from newsletter.web.api.deps import Admin, Db
from newsletter.web.api.errors import NOT_FOUND, ApiRoute
from newsletter.web.api.schemas import SuppressionAdded, SuppressionIn, SuppressionOut, SuppressionPage

router = APIRouter(tags=["suppressions"], route_class=ApiRoute)


def suppression_out(s: Suppression) -> SuppressionOut:
    return SuppressionOut(
        id=s.id, email=s.email, email_hash=s.email_hash, reason=s.reason, detail=s.detail, created_at=s.created_at
    )


@router.get("/suppressions", summary="Suppressed addresses, a page at a time")
def list_suppressions(
    session: Db,
    _: Admin,
    reason: SuppressionReason | None = None,
    email: Annotated[str | None, Query(max_length=320, description="Substring, or an exact erased address.")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 100,
) -> SuppressionPage:
    page = suppressions.list_suppressions(session, reason=reason, email=email, after=after, limit=limit)
    return SuppressionPage(items=[suppression_out(s) for s in page.items], next_cursor=page.next_cursor)


@router.post("/suppressions", status_code=201, summary="Never mail this address (idempotent)")
def add(body: SuppressionIn, session: Db, _: Admin, response: Response) -> SuppressionAdded:
    suppression, created = suppressions.add(session, body.email, detail=body.detail)
    if not created:
        response.status_code = 200
    return SuppressionAdded(suppression=suppression_out(suppression), created=created)


@router.delete(
    "/suppressions/{email}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Allow mail to an address again (logged)",
)
def remove(session: Db, user: Admin, email: str = Path(max_length=320)) -> Response:
    suppressions.remove(session, email, by=user.name)
    return Response(status_code=204)
