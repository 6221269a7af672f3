"""Admin API: users and their tokens (admins only), and who am I (any token)."""

from __future__ import annotations

from fastapi import APIRouter, Path

from newsletter import users
from newsletter.models import User
from newsletter.web.api.deps import Admin, Editor
from newsletter.web.api.errors import NOT_FOUND, ApiRoute
from newsletter.web.api.schemas import IssuedTokenOut, Revoked, TokenOut, UserIn, UserOut
from newsletter.web.deps import SessionDep

router = APIRouter(tags=["users"], route_class=ApiRoute)
UserName = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def user_out(session: SessionDep, user: User) -> UserOut:
    return UserOut(
        name=user.name,
        role=user.role,
        created_at=user.created_at,
        tokens=[
            TokenOut(prefix=t.prefix, created_at=t.created_at, last_used_at=t.last_used_at)
            for t in users.active_tokens(session, user)
        ],
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
def create_user(body: UserIn, session: SessionDep, _: Admin) -> IssuedTokenOut:
    return issued(users.create_user(session, body.name, body.role))


@router.post("/users/{name}/rotate", responses=NOT_FOUND, summary="New token; the user's old tokens are revoked")
def rotate(session: SessionDep, _: Admin, name: str = UserName) -> IssuedTokenOut:
    return issued(users.rotate(session, name))


@router.delete("/users/{name}/tokens", responses=NOT_FOUND, summary="Revoke every token of a user")
def revoke_user(session: SessionDep, _: Admin, name: str = UserName) -> Revoked:
    return Revoked(revoked=users.revoke(session, name=name))


@router.delete("/tokens/{prefix}", responses=NOT_FOUND, summary="Revoke one token by its prefix")
def revoke_token(session: SessionDep, _: Admin, prefix: str = Path(max_length=16)) -> Revoked:
    return Revoked(revoked=users.revoke(session, prefix=prefix))
