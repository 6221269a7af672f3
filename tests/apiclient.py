"""A TestClient on the real app with test sessions, API tokens for each role and a recording job queue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, users
from newsletter.config import Settings
from newsletter.models import Role
from newsletter.web.api.deps import Jobs, get_jobs
from newsletter.web.app import create_app


@dataclass
class RecordingJobs(Jobs):
    started: list[int] = field(default_factory=list)
    batches: list[delivery.BatchRange] = field(default_factory=list)
    confirmations: list[int] = field(default_factory=list)

    def start_campaign(self, campaign_id: int) -> None:
        self.started.append(campaign_id)

    def enqueue_batches(self, ranges: list[delivery.BatchRange]) -> None:
        self.batches.extend(ranges)

    def send_import_confirmations(self, list_id: int) -> bool:
        self.confirmations.append(list_id)
        return True


@dataclass
class Api:
    client: TestClient
    jobs: RecordingJobs
    sessions: sessionmaker[Session]
    tokens: dict[str, str]

    def as_(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> Any:
        headers = {**self.as_(role), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)


@contextmanager
def api_client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Api]:
    app = create_app(settings)
    app.state.sessions = sessions
    jobs = RecordingJobs()
    app.dependency_overrides[get_jobs] = lambda: jobs
    with sessions() as session:
        tokens = {
            "admin": users.create_user(session, "root", Role.admin).token,
            "editor": users.create_user(session, "ed", Role.editor).token,
        }
        revoked = users.create_user(session, "gone", Role.admin)
        users.revoke(session, name="gone")
        tokens["revoked"] = revoked.token
        tokens["wrong"] = "nl_" + "x" * 43
        session.commit()
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, jobs, sessions, tokens)
