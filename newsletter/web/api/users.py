"""Admin API: users and their tokens (admins only), and who am I (any token). Changes are audited."""

from __future__ import annotations

from fastapi import APIRouter, Path

from newsletter import audit, users
from newsletter.models import User
from newsletter.web.api.deps import Admin, AdminActor, Editor
from newsletter.web.api.errors import NOT_FOUND, ApiRoute
from newsletter.web.api.schemas import (
    Deactivated,
    IssuedTokenOut,
    Revoked,
    RoleIn,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
)
from newsletter.web.deps import SessionDep

router = APIRouter(tags=["users"], route_class=ApiRoute)
UserName = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def user_out(session: SessionDep, user: User) -> UserOut:
    return UserOut(
        name=user.name,
        role=user.role,
        created_at=user.created_at,
        tokens=[
            TokenOut(prefix=t.prefix, purpose=t.name, created_at=t.created_at, last_used_at=t.last_used_at)
            for t in users.active_tokens(session, user)
        ],
        deactivated_at=user.deactivated_at,
        two_factor=user.totp_enabled_at is not None,
    )


def issued(token: users.IssuedToken) -> IssuedTokenOut:
    return IssuedTokenOut(name=token.user.name, role=token.user.role, token=token.token, prefix=token.prefix)


@router.get("/me", summary="The user this token belongs to")
def me(session: SessionDep, user: Editor) -> UserOut:
    return user_out(session, user)


@router.get("/users", summary="Users and their active tokens (by prefix)")
def list_users(session: SessionDep, _: Admin) -> list[UserOut]:
    return [user_out(session, user) for user in users.list_users(session)]


@router.post("/users", status_code=201, summary="Create a user; the token is in this answer only")
def create_user(body: UserIn, session: SessionDep, actor: AdminActor) -> IssuedTokenOut:
    token = users.create_user(session, body.name, body.role)
    audit.record(session, actor, "user.create", f"user:{body.name}", role=body.role.value, prefix=token.prefix)
    return issued(token)


@router.post("/users/{name}/role", responses=NOT_FOUND, summary="Make a user an admin or an editor")
def set_role(body: RoleIn, session: SessionDep, actor: AdminActor, name: str = UserName) -> UserOut:
    previous = users.set_role(session, name, body.role)
    audit.record(session, actor, "user.role", f"user:{name}", previous=previous.value, role=body.role.value)
    return user_out(session, users.get_user(session, name))


@router.post("/users/{name}/deactivate", responses=NOT_FOUND, summary="No sign-in, every token refused")
def deactivate(session: SessionDep, actor: AdminActor, name: str = UserName) -> Deactivated:
    ended = users.deactivate(session, name)
    audit.record(session, actor, "user.deactivate", f"user:{name}", sessions_ended=ended)
    return Deactivated(name=name, deactivated=True, sessions_ended=ended)


@router.post("/users/{name}/reactivate", responses=NOT_FOUND, summary="Let a deactivated user back in")
def reactivate(session: SessionDep, actor: AdminActor, name: str = UserName) -> Deactivated:
    users.reactivate(session, name)
    audit.record(session, actor, "user.reactivate", f"user:{name}")
    return Deactivated(name=name, deactivated=False)


@router.post(
    "/users/{name}/tokens", status_code=201, responses=NOT_FOUND, summary="One more token, named by its purpose"
)
def create_token(body: TokenIn, session: SessionDep, actor: AdminActor, name: str = UserName) -> IssuedTokenOut:
    token = users.create_token(session, name, body.purpose)
    audit.record(session, actor, "token.create", f"user:{name}", prefix=token.prefix, purpose=body.purpose.strip())
    return issued(token)


@router.post("/users/{name}/rotate", responses=NOT_FOUND, summary="New token; the user's old tokens are revoked")
def rotate(session: SessionDep, actor: AdminActor, name: str = UserName) -> IssuedTokenOut:
    token = users.rotate(session, name)
    audit.record(session, actor, "token.create", f"user:{name}", prefix=token.prefix, rotated=True)
    return issued(token)


@router.delete("/users/{name}/tokens", responses=NOT_FOUND, summary="Revoke every token of a user")
def revoke_user(session: SessionDep, actor: AdminActor, name: str = UserName) -> Revoked:
    count = users.revoke(session, name=name)
    audit.record(session, actor, "token.revoke", f"user:{name}", count=count)
    return Revoked(revoked=count)


@router.delete("/tokens/{prefix}", responses=NOT_FOUND, summary="Revoke one token by its prefix")
def revoke_token(session: SessionDep, actor: AdminActor, prefix: str = Path(max_length=16)) -> Revoked:
    owner = users.token_owner(session, prefix)
    count = users.revoke(session, prefix=prefix)
    audit.record(session, actor, "token.revoke", f"user:{owner.name}", prefix=prefix)
    return Revoked(revoked=count)
