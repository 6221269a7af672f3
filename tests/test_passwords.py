"""Admin passwords in the domain: the rules, Argon2id with argon2-cffi's defaults, rehashing, web sessions."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import passwords, users, websessions
from newsletter.models import Role, User, WebSession


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short", "too short (5 characters): use at least 10"),
        ("x" * 1025, "too long: use at most 1024 bytes"),
        ("é" * 600, "too long: use at most 1024 bytes"),
        ("margaret.h", "must not be the user name"),
        ("MARGARET.H", "must not be the user name"),
        ("abababababab", "repeats one or two characters"),
    ],
)
def test_bad_passwords_are_refused_with_how_to_fix(session: Session, password: str, says: str) -> None:
    with pytest.raises(passwords.InvalidPassword, match=says.replace("(", r"\(").replace(")", r"\)")):
        users.create_user(session, "margaret.h", Role.editor, password=password)
    assert session.scalars(select(User)).all() == []


def test_passwords_are_argon2id_with_the_library_defaults(session: Session) -> None:
    issued = users.create_user(session, "ada", Role.admin, email="Ada@Example.ORG", password="correct horse battery")
    stored = issued.user.password_hash
    assert stored is not None and stored.startswith("$argon2id$")
    defaults = PasswordHasher()
    assert f"m={defaults.memory_cost},t={defaults.time_cost},p={defaults.parallelism}" in stored
    assert issued.user.email == "ada@example.org"
    assert passwords.user_for_sign_in(session, "ada", "correct horse battery") is issued.user
    assert passwords.user_for_sign_in(session, "ada", "correct horse batterY") is None
    assert passwords.user_for_sign_in(session, "nobody", "correct horse battery") is None
    assert passwords.user_for_sign_in(session, "ada", "x" * 2000) is None


def test_a_hash_with_old_parameters_is_replaced_at_sign_in(session: Session) -> None:
    user = users.create_user(session, "ada", Role.admin, password="correct horse battery").user
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("correct horse battery")
    user.password_hash = weak
    assert passwords.user_for_sign_in(session, "ada", "wrong horse battery") is None
    assert user.password_hash == weak  # a failed attempt changes nothing
    assert passwords.user_for_sign_in(session, "ada", "correct horse battery") is user
    assert user.password_hash != weak and not PasswordHasher().check_needs_rehash(user.password_hash or "")


def test_api_only_users_cannot_sign_in(session: Session) -> None:
    users.create_user(session, "robot", Role.editor)
    assert session.scalars(select(User)).one().password_hash is None
    assert passwords.user_for_sign_in(session, "robot", "") is None
    assert passwords.user_for_sign_in(session, "robot", "anything at all") is None


@pytest.mark.usefixtures("cheap_hashes")
def test_set_password_ends_the_other_sessions(session: Session) -> None:
    user = users.create_user(session, "ada", Role.admin, password="correct horse battery").user
    mine = websessions.start(session, user, ip="192.0.2.1", user_agent="here")
    elsewhere = websessions.start(session, user, ip="192.0.2.2", user_agent="there")
    other = users.create_user(session, "bob", Role.editor, password="another good password").user
    bobs = websessions.start(session, other, ip=None, user_agent=None)
    with pytest.raises(passwords.InvalidPassword):
        users.set_password(session, "ada", "ada")
    assert users.set_password(session, "ada", "a new good password", keep=mine.row.id) == 1
    session.expire_all()
    timeouts = websessions.Timeouts(idle=dt.timedelta(hours=2), absolute=dt.timedelta(hours=12))
    assert websessions.find(session, mine.session_id, timeouts) is not None
    assert websessions.find(session, elsewhere.session_id, timeouts) is None
    assert websessions.find(session, bobs.session_id, timeouts) is not None
    assert users.set_password(session, "ada", "yet another password") == 1  # from the CLI: every session
    assert passwords.user_for_sign_in(session, "ada", "yet another password") is not None
    with pytest.raises(users.UserNotFound):
        users.set_password(session, "nobody", "a new good password")


@pytest.mark.usefixtures("cheap_hashes")
def test_sessions_end_after_idle_and_absolute_timeouts(session: Session) -> None:
    user = users.create_user(session, "ada", Role.admin, password="correct horse battery").user
    start = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC)
    started = websessions.start(session, user, ip="192.0.2.1", user_agent="x" * 600, now=start)
    assert started.row.user_agent == "x" * 512
    timeouts = websessions.Timeouts(idle=dt.timedelta(hours=2), absolute=dt.timedelta(hours=12))
    now = start
    while now < start + dt.timedelta(hours=11, minutes=30):  # busy all day: the idle timeout never hits
        now += dt.timedelta(minutes=90)
        assert websessions.find(session, started.session_id, timeouts, now=now) is not None
    assert (
        websessions.find(session, started.session_id, timeouts, now=start + dt.timedelta(hours=12, seconds=1)) is None
    )
    row = session.scalars(select(WebSession)).one()
    assert websessions.find(session, "", timeouts) is None
    assert websessions.find(session, "x" * 200, timeouts) is None
    websessions.revoke(session, row.id)
    session.expire_all()
    assert websessions.find(session, started.session_id, timeouts, now=start) is None


@pytest.mark.serial
def test_an_unknown_user_costs_what_a_known_one_does(session: Session) -> None:
    """The time a refusal takes does not tell whether the user exists: both verify one Argon2id hash."""
    users.create_user(session, "ada", Role.admin, password="correct horse battery")
    users.create_user(session, "robot", Role.editor)  # API-only: no hash of its own

    def cost(name: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            assert passwords.user_for_sign_in(session, name, "a wrong password") is None
            best = min(best, time.perf_counter() - started)
        return best

    cost("nobody")  # the dummy hash is made once, at the first unknown name
    known, unknown, api_only = cost("ada"), cost("nobody"), cost("robot")
    assert unknown > 0.5 * known and api_only > 0.5 * known, (known, unknown, api_only)
    assert known > 0.01  # the real defaults, not a cheap test hasher
