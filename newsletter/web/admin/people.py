"""/admin/users (admins): create users, change a role, reset a password, deactivate and reactivate,
remove a lost second factor, and each user's API tokens. Every change goes into the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter import addresses, audit, passwords, twofactor, users, websessions
from newsletter.models import Role
from newsletter.web.admin.account import TOKEN_FORM, Purpose, TokenPrefix, issue_token, revoke_token
from newsletter.web.admin.auth import Admin, SignedIn, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
USERS = "/admin/users"
UserName = Annotated[str, Path(pattern=users.NAME.pattern)]
Text = Annotated[str, Form(max_length=4096)]


def _list(request: Request, session: Session, *, errors: dict[str, str] | None = None, **form: str) -> Response:
    people = users.list_users(session)
    return render(
        request,
        "users/list.html",
        title="Users",
        people=people,
        token_counts={u.id: len(users.active_tokens(session, u)) for u in people},
        errors=errors or {},
        form={"name": "", "email": "", "role": Role.editor.value, **form},
        min_length=passwords.MIN_LENGTH,
        status_code=422 if errors else 200,
    )


@router.get(USERS)
def user_list(request: Request, session: SessionDep, me: Admin) -> Response:
    return _list(request, session)


def _new_user_errors(name: str, email: str, role: str, password: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not users.NAME.match(name):
        errors["name"] = "Use letters, digits and . _ @ - (at most 100 characters), starting with a letter or digit."
    if email:
        try:
            addresses.normalise_email(email)
        except addresses.InvalidEmail as exc:
            errors["email"] = f"This address cannot be used: {exc}"
    if role not in {r.value for r in Role}:
        errors["role"] = "Choose admin or editor."
    if password and not errors.get("name"):
        try:
            passwords.check_rules(password, user_name=name)
        except passwords.InvalidPassword as exc:
            errors["password"] = str(exc).capitalize() + "."
    return errors


@router.post(USERS)
def create_user(
    request: Request,
    session: SessionDep,
    me: Admin,
    name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=400)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    password: Text = "",
) -> Response:
    name, email = name.strip(), email.strip()
    errors = _new_user_errors(name, email, role, password)
    if not errors:
        try:
            users.add_user(session, name, role, email=email or None, password=password or None)
        except users.InvalidUser as exc:
            errors["name"] = str(exc).capitalize() + "."
    if errors:
        session.rollback()
        return _list(request, session, errors=errors, name=name, email=email, role=role)
    audit.record(session, actor(request, me), "user.create", f"user:{name}", role=role, password_set=bool(password))
    how = "They can sign in now." if password else "Set a password on this page when they should sign in."
    return redirect(request, f"{USERS}/{name}", flash=f"User {name} ({role}) created. {how}")


def _page(
    request: Request, session: Session, me: SignedIn, name: str, *, errors: dict[str, str] | None = None, **extra: Any
) -> Response:
    user = users.get_user(session, name)
    return render(
        request,
        "users/page.html",
        title=user.name,
        user=user,
        is_me=user.id == me.user_id,
        tokens=users.active_tokens(session, user),
        two_factor_on=twofactor.is_enabled(user),
        errors=errors or {},
        min_length=passwords.MIN_LENGTH,
        status_code=422 if errors else 200,
        **{**TOKEN_FORM, **extra},
    )


@router.get(USERS + "/{name}")
def user_page(request: Request, session: SessionDep, me: Admin, name: UserName) -> Response:
    return _page(request, session, me, name)


def _back(name: str) -> str:
    return f"{USERS}/{name}"


@router.post(USERS + "/{name}/role")
def change_role(
    request: Request, session: SessionDep, me: Admin, name: UserName, role: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    try:
        previous = users.set_role(session, name, role)
    except users.InvalidUser as exc:
        return redirect(request, _back(name), flash=str(exc).capitalize() + ".", kind="error")
    audit.record(session, actor(request, me), "user.role", f"user:{name}", previous=previous.value, role=role)
    return redirect(request, _back(name), flash=f"{name} is an {role} now.")


@router.post(USERS + "/{name}/password")
def reset_password(
    request: Request, session: SessionDep, me: Admin, name: UserName, new: Text = "", repeat: Text = ""
) -> Response:
    try:
        passwords.check_rules(new, user_name=name)
    except passwords.InvalidPassword as exc:
        return _page(request, session, me, name, errors={"new": str(exc).capitalize() + "."})
    if new != repeat:
        return _page(
            request, session, me, name, errors={"repeat": "The two passwords differ: type the same one twice."}
        )
    ended = users.set_password(session, name, new, keep=me.session_row_id)
    audit.record(session, actor(request, me), "user.password", f"user:{name}", sessions_ended=ended)
    return redirect(request, _back(name), flash=f"New password set for {name}; {ended} signed-in session(s) ended.")


@router.post(USERS + "/{name}/deactivate")
def deactivate(request: Request, session: SessionDep, me: Admin, name: UserName) -> Response:
    if users.get_user(session, name).id == me.user_id:
        return redirect(request, _back(name), flash="You cannot deactivate yourself: ask another admin.", kind="error")
    try:
        ended = users.deactivate(session, name)
    except users.InvalidUser as exc:
        return redirect(request, _back(name), flash=str(exc).capitalize() + ".", kind="error")
    audit.record(session, actor(request, me), "user.deactivate", f"user:{name}", sessions_ended=ended)
    flash = f"{name} is deactivated: signed out of {ended} browser(s), and their tokens are refused."
    return redirect(request, _back(name), flash=flash)


@router.post(USERS + "/{name}/reactivate")
def reactivate(request: Request, session: SessionDep, me: Admin, name: UserName) -> Response:
    try:
        users.reactivate(session, name)
    except users.InvalidUser as exc:
        return redirect(request, _back(name), flash=str(exc).capitalize() + ".", kind="error")
    audit.record(session, actor(request, me), "user.reactivate", f"user:{name}")
    return redirect(request, _back(name), flash=f"{name} can sign in and use their tokens again.")


@router.post(USERS + "/{name}/two-factor/reset")
def reset_two_factor(request: Request, session: SessionDep, me: Admin, name: UserName) -> Response:
    user = users.get_user(session, name)
    if not twofactor.is_enabled(user):
        return redirect(request, _back(name), flash=f"{name} has no two-factor sign-in to remove.", kind="error")
    twofactor.reset(session, user)
    ended = websessions.revoke_all(session, user, keep=me.session_row_id)
    audit.record(session, actor(request, me), "two_factor.disable", f"user:{name}", by_admin=True, sessions_ended=ended)
    return redirect(
        request, _back(name), flash=f"Two-factor sign-in removed for {name}: their password alone signs them in."
    )


@router.post(USERS + "/{name}/tokens")
def create_token(request: Request, session: SessionDep, me: Admin, name: UserName, purpose: Purpose = "") -> Response:
    issued = issue_token(request, session, me, name, purpose)
    if isinstance(issued, str):
        return _page(request, session, me, name, errors={"purpose": issued}, purpose=purpose)
    return _page(request, session, me, name, new_token=issued, new_token_name=purpose.strip())


@router.post(USERS + "/{name}/tokens/{prefix}/revoke")
def revoke(request: Request, session: SessionDep, me: Admin, name: UserName, prefix: TokenPrefix) -> Response:
    users.get_user(session, name)
    refusal = revoke_token(request, session, me, name, prefix)
    if refusal is not None:
        return redirect(request, _back(name), flash=refusal, kind="error")
    return redirect(request, _back(name), flash=f"Token {prefix}… of {name} was revoked.")
