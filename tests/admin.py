"""The admin UI's test harness: users with passwords, signed-in TestClients, the CSRF token of a page.

Loaded as a plugin by conftest.py. The `admin_web` fixture (both backends, each test's rows rolled back)
gives an app whose requests use the test's sessions:

    def test_page(admin_web: AdminWeb) -> None:
        client = admin_web.signed_in(Role.editor)          # a new editor, signed in through the form
        page = client.get("/admin/digests")
        client.post("/admin/x", data={"csrf_token": csrf_from(page.text), ...})

`signed_in(role, name=...)` creates the user (with `PASSWORD`) unless `name` exists, then signs in with
the real form; each call returns a new client with its own cookies. `admin_web.client` is anonymous.
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import passwords, users
from newsletter.config import Settings
from newsletter.models import Role, User
from newsletter.web import create_app
from newsletter.web.admin.signin import SignInThrottles
from newsletter.web.throttle import LocalThrottle

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient
    from httpx import Response

PASSWORD = "correct horse battery staple"
CLIENT_IP = "203.0.113.10"
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def make_user(
    session: Session, name: str, role: Role = Role.admin, *, password: str | None = PASSWORD, email: str | None = None
) -> User:
    """A user who can sign in with `password` (None: an API-only user)."""
    issued = users.create_user(session, name, role, email=email, password=password)
    session.flush()
    return issued.user


def csrf_from(page: str) -> str:
    """The CSRF token of a rendered admin page (its first `csrf_token` field)."""
    match = _CSRF.search(page)
    assert match, "the page has no csrf_token field"
    return html.unescape(match[1])


def sign_in(client: TestClient, name: str, password: str = PASSWORD, next_url: str | None = None) -> Response:
    """Fill in and submit the sign-in form as a browser would; returns the POST's response."""
    form = client.get("/admin/sign-in")
    data = {"name": name, "password": password, "csrf_token": csrf_from(form.text)}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/admin/sign-in", data=data)


@dataclass
class AdminWeb:
    app: FastAPI
    client: TestClient
    sessions: sessionmaker[Session]
    settings: Settings
    _clients: list[TestClient] = field(default_factory=list)

    def new_client(self, ip: str = CLIENT_IP) -> TestClient:
        """An anonymous client with its own cookie jar (base URL: BASE_URL, so Secure cookies are sent)."""
        client = TestClient(self.app, base_url=self.settings.base_url, client=(ip, 50000), follow_redirects=False)
        self._clients.append(client)
        return client

    def user(self, name: str, role: Role = Role.admin, **options: object) -> User:
        with self.sessions.begin() as session:
            existing = session.scalar(select(User).where(User.name == name))
            return existing or make_user(session, name, role, **options)  # type: ignore[arg-type]

    def signed_in(self, role: Role = Role.admin, *, name: str | None = None) -> TestClient:
        """A new client signed in (through the form) as `name`, created with `role` if new."""
        name = name or f"{role.value}-user"
        self.user(name, role)
        client = self.new_client()
        answer = sign_in(client, name)
        assert answer.status_code == 303, answer.text
        return client


@pytest.fixture
def cheap_hashes() -> Iterator[None]:
    """Argon2id with the lowest costs, for tests that sign in many times: the defaults cost ~0.5 s a hash
    on this shared machine. `test_passwords` checks the real defaults."""
    previous = passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    yield
    passwords.use_hasher(previous)


@pytest.fixture
def admin_web(
    settings: Settings, sessions: sessionmaker[Session], request: pytest.FixtureRequest
) -> Iterator[AdminWeb]:
    request.getfixturevalue("cheap_hashes")
    app = create_app(settings)
    app.state.sessions = app.state.tracking_sessions = app.state.one_click_sessions = sessions
    app.state.open_hot_pools = False
    app.state.sign_in_throttles = SignInThrottles(
        LocalThrottle(settings.signin_account_limit, 900), LocalThrottle(settings.signin_ip_limit, 900)
    )
    anonymous = TestClient(app, base_url=settings.base_url, client=(CLIENT_IP, 50000), follow_redirects=False)
    web = AdminWeb(app, anonymous, sessions, settings, [anonymous])
    yield web
    for client in web._clients:
        client.close()
