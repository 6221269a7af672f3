"""What admin API handlers depend on beyond `web.deps`: the authenticated user and role, the job queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from newsletter import audit, delivery, import_jobs, imports, users
from newsletter.models import Role, User
from newsletter.web.deps import SessionDep
from newsletter.web.pages import client_ip

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `newsletter users create NAME --role admin|editor`.",
)


def current_user(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
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


def editor_actor(request: Request, user: Editor) -> audit.Actor:
    """The token's user as the audit log names them (any role), with the client's address."""
    return audit.Actor.token(user, client_ip(request))


def admin_actor(request: Request, user: Admin) -> audit.Actor:
    return audit.Actor.token(user, client_ip(request))


EditorActor = Annotated[audit.Actor, Depends(editor_actor)]
AdminActor = Annotated[audit.Actor, Depends(admin_actor)]


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

    def run_import(self, job_id: int, sessions: sessionmaker[Session], *, embedded: bool) -> None:
        """Start a queued import job: a Celery task, or without a broker a thread of this process."""
        if embedded:
            import_jobs.run_in_thread(sessions, job_id, lambda report, list_id: self._confirm_imported(report, list_id))
            return
        from worker import tasks

        tasks.run_import.delay(job_id)

    def _confirm_imported(self, report: imports.ImportReport, list_id: int) -> None:
        if report.pending_confirmation:
            self.send_import_confirmations(list_id)


def send_import_confirmations(list_id: int) -> bool:
    """Enqueue the confirmation emails of the subscriptions an import left pending (after its commit)."""
    from worker import tasks

    tasks.send_import_confirmations.delay(list_id)
    return True


def get_jobs() -> Jobs:
    return Jobs()


JobQueue = Annotated[Jobs, Depends(get_jobs)]
