"""The audit log domain: rows written in the caller's transaction, kept after the user goes, searched
newest first by keyset."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import audit, twofactor, users
from newsletter.config import Settings
from newsletter.models import ActorKind, AuditEntry, RecoveryCode, Role, User


def test_record_and_search_newest_first_by_keyset(session: Session) -> None:
    ada = audit.Actor.web("ada", "192.0.2.7")
    for number in range(5):
        audit.record(session, ada, "campaign.send", f"campaign:{number}", recipients=number)
    audit.record(session, audit.Actor.cli(), "list.create", "list:weekly")
    audit.record(session, audit.Actor.system(), "campaign.schedule", "campaign:9")
    first = audit.search(session, actor="ada", limit=3)
    assert [entry.target for entry in first] == ["campaign:4", "campaign:3", "campaign:2"]
    assert first[0].details == {"recipients": 4} and first[0].ip == "192.0.2.7"
    assert first[0].actor_kind == ActorKind.user
    older = audit.search(session, actor="ada", limit=3, before_id=first[-1].id)
    assert [entry.target for entry in older] == ["campaign:1", "campaign:0"]
    assert [e.action for e in audit.search(session, action="campaign")] == ["campaign.schedule"] + ["campaign.send"] * 5
    assert [e.target for e in audit.search(session, action="list.create")] == ["list:weekly"]
    assert len(audit.search(session, target="campaign:")) == 6
    assert [e.target for e in audit.search(session, target="campaign:3")] == ["campaign:3"]
    assert audit.search(session, action="campaign%") == []  # a LIKE wildcard is matched as text
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert audit.search(session, since=tomorrow) == []
    assert len(audit.search(session, until=tomorrow)) == 7


def test_bad_queries_and_actions_are_refused(session: Session) -> None:
    with pytest.raises(audit.InvalidAuditQuery, match="between 1 and 500"):
        audit.search(session, limit=0)
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(audit.InvalidAuditQuery, match="since is after until"):
        audit.search(session, since=now, until=now - dt.timedelta(days=1))
    with pytest.raises(ValueError, match="dotted"):
        audit.record(session, audit.Actor.cli(), "Send Campaign")
    assert session.scalars(select(AuditEntry)).all() == []


def test_entries_outlive_their_user_and_roll_back_with_the_change(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        users.create_user(session, "grace", Role.editor)
        grace = users.get_user(session, "grace")
        audit.record(session, audit.Actor.token(grace), "token.create", "user:grace")
        session.execute(delete(User).where(User.id == grace.id))
        session.flush()
        (entry,) = audit.search(session)
        assert (entry.actor, entry.actor_kind, entry.target) == ("grace", ActorKind.token, "user:grace")
        session.rollback()
        assert audit.search(session) == []


def test_two_factor_columns_and_deactivation(session: Session, settings: Settings) -> None:
    issued = users.create_user(session, "lin", Role.admin)
    users.create_user(session, "mo", Role.admin)
    enrolment = twofactor.begin(session, settings, issued.user)
    assert issued.user.totp_secret is not None and enrolment.secret not in issued.user.totp_secret
    now = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC)
    codes = twofactor.confirm(session, settings, issued.user, pyotp.TOTP(enrolment.secret).at(now), now=now)
    assert len(codes) == 10 and twofactor.remaining_recovery_codes(session, issued.user) == 10
    assert issued.user.totp_enabled_at == now and issued.user.totp_last_step is not None
    users.deactivate(session, "lin")
    assert issued.user.deactivated_at is not None
    with pytest.raises(users.AuthenticationFailed):
        users.authenticate(session, issued.token)
    users.reactivate(session, "lin")
    assert users.authenticate(session, issued.token).name == "lin"
    (code,) = session.scalars(
        select(RecoveryCode).where(RecoveryCode.code_hash == twofactor.hash_recovery_code(codes[0]))
    )
    assert code.used_at is None
