"""The admin REST API under /api/v1: bearer tokens, roles, one JSON error shape, routers per resource."""

from __future__ import annotations

from fastapi import APIRouter

from newsletter.web.api import (
    audit,
    bounces,
    campaigns,
    digests,
    lists,
    segments,
    sequences,
    subscribers,
    suppressions,
    users,
    webhooks,
)
from newsletter.web.api.errors import COMMON_RESPONSES, ApiRoute

router = APIRouter(prefix="/api/v1", route_class=ApiRoute, responses=COMMON_RESPONSES)
for module in (users, lists, subscribers, digests, campaigns, suppressions, bounces, audit, sequences, webhooks):
    router.include_router(module.router)
router.include_router(segments.router)
