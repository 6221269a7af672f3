"""What admin API handlers depend on: a unit of work, the authenticated user and role, the job queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from newsletter import delivery, users
from newsletter.config import Settings
from newsletter.db import unit_of_work
from newsletter.models import Role, User

log = logging.getLogger(__name__)


def get_db(request: Request) -> Iterator[Session]:
    """One unit of work per request, committed before the response is sent (see `Db`)."""
    with unit_of_work(request.app.state.sessions) as session:
        request.state.db = session  # so ApiRoute can roll back when it turns an error into a response
        yield session


# scope="function": commit when the handler returns, before the client hears "done".
Db = Annotated[Session, Depends(get_db, scope="function")]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `newsletter users create NAME --role admin|editor`.",
)


def current_user(session: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
    if credentials is None:
        raise HTTPException(401, "missing API token: send the header 'Authorization: Bearer TOKEN'")
    try:
        return users.authenticate(session, credentials.credentials)
    except users.AuthenticationFailed as exc:
        raise HTTPException(401, str(exc)) from None


def require_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != Role.admin:
        raise HTTPException(403, f"user {user.name!r} is an editor; this needs an admin token")
    return user


Editor = Annotated[User, Depends(current_user)]  # editors and admins
Admin = Annotated[User, Depends(require_admin)]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_settings)]


class Jobs:
    """Enqueues background work; called only after the request's transaction committed."""

    def start_campaign(self, campaign_id: int) -> None:
        from worker import tasks

        tasks.start_campaign.delay(campaign_id)

    def enqueue_batches(self, ranges: list[delivery.BatchRange]) -> None:
        from worker import tasks

        tasks.enqueue_batches(ranges)

    def send_import_confirmations(self, list_id: int) -> bool:
        return send_import_confirmations(list_id)


def send_import_confirmations(list_id: int) -> bool:
    """Enqueue the confirmation emails of the subscriptions an import left pending (after its commit)."""
    from worker import tasks

    tasks.send_import_confirmations.delay(list_id)
    return True


def get_jobs() -> Jobs:
    return Jobs()


JobQueue = Annotated[Jobs, Depends(get_jobs)]
