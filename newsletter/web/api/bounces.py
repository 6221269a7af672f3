"""Admin API: delivery status notifications and feedback reports posted by a mail relay or an inbound hook."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from newsletter import bounces
from newsletter.web.api.deps import Admin
from newsletter.web.api.errors import ApiRoute, described
from newsletter.web.api.schemas import BounceOutcome, BounceReport
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["bounces"], route_class=ApiRoute)

MAX_REPORT_BYTES = 10 * 1024 * 1024  # a report quoting a whole large message stays well under this


@router.post(
    "/bounces",
    summary="Record a bounce (RFC 3464 DSN) or complaint (RFC 5965 ARF) sent back by mail",
    responses={413: described("The message is larger than 10 MiB."), 422: described("Not such a report.")},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"message/rfc822": {"schema": {"type": "string"}}},
            "description": "The report exactly as received, headers and all.",
        }
    },
)
async def ingest(request: Request, session: SessionDep, settings: SettingsDep, _: Admin) -> BounceReport:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_REPORT_BYTES:
            raise HTTPException(413, "the message is larger than 10 MiB")
    try:
        outcomes = await run_in_threadpool(bounces.ingest, session, settings, bytes(data))
    except bounces.NotAReport as error:
        raise HTTPException(422, str(error)) from None
    session.commit()
    return BounceReport(reports=[BounceOutcome.model_validate(o.as_dict()) for o in outcomes])
