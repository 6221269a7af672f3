"""Users in the domain: roles, named tokens, and the last admin who cannot be demoted or deactivated."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from newsletter import users
from newsletter.models import Role


def test_roles_tokens_and_the_last_admin(session: Session) -> None:
    users.create_user(session, "ana", Role.admin)
    users.create_user(session, "ben", Role.editor)
    with pytest.raises(users.InvalidUser, match="last active admin"):
        users.set_role(session, "ana", Role.editor)
    with pytest.raises(users.InvalidUser, match="last active admin"):
        users.deactivate(session, "ana")
    assert users.get_user(session, "ana").role == Role.admin
    assert users.set_role(session, "ben", "admin") == Role.editor
    assert users.set_role(session, "ana", "editor") == Role.admin
    with pytest.raises(users.InvalidUser, match="admin or editor"):
        users.set_role(session, "ana", "owner")
    issued = users.create_token(session, "ana", "  the  newsroom CMS ")
    assert users.token_owner(session, issued.prefix).name == "ana"
    (named,) = [t for t in users.active_tokens(session, issued.user) if t.prefix == issued.prefix]
    assert named.name == "the newsroom CMS"
    with pytest.raises(users.InvalidUser, match="say what the token is for"):
        users.create_token(session, "ana", " ")
    users.revoke(session, prefix=issued.prefix)
    with pytest.raises(users.TokenNotFound):
        users.token_owner(session, issued.prefix)
    users.deactivate(session, "ana")
    with pytest.raises(users.InvalidUser, match="reactivate them"):
        users.create_token(session, "ana", "again")
    with pytest.raises(users.InvalidUser, match="already deactivated"):
        users.deactivate(session, "ana")
