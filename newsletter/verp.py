"""VERP (variable envelope return path): each message's bounce address names its delivery,
`bounces+<token>@domain` made from the list's own VERP address or else VERP_ADDRESS, so a bounce that
quotes nothing of the message (no Message-ID, no headers) still finds its ledger row. The token is
signed (purpose `bounce`): an address guessed or copied from another delivery names nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.models import MailingList
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken


def address_of(mailing_list: MailingList, default: str | None) -> str | None:
    """The address a list's return paths are made from: its own, else the installation's VERP_ADDRESS
    (`default`); None when the list sends with the plain return path."""
    return (mailing_list.verp_address or default) if mailing_list.verp else None


def known_addresses(session: Session, default: str | None) -> list[str]:
    """Every address return paths are made from here: VERP_ADDRESS and the lists' own (one query)."""
    own = session.scalars(select(MailingList.verp_address).where(MailingList.verp_address.is_not(None)).distinct())
    return list(dict.fromkeys(a for a in (default, *own) if a))


def return_path(tokens: Tokens, verp_address: str, delivery_id: int) -> str:
    """`bounces+<token>@domain` for `bounces@domain` and one delivery."""
    local, _, domain = verp_address.rpartition("@")
    return f"{local}+{tokens.make_lowercase(TokenPurpose.bounce, delivery_id)}@{domain}"


def delivery_of(tokens: Tokens, verp_addresses: Iterable[str], addresses: Iterable[str | None]) -> int | None:
    """The delivery the first of `addresses` that is one of our return paths (made from any of
    `verp_addresses`) names, or None."""
    ours = {tuple(a.lower().rpartition("@")[::2]) for a in verp_addresses}
    if not ours:
        return None
    for address in addresses:
        given_local, _, given_domain = (address or "").strip().strip("<>").lower().rpartition("@")
        prefix, plus, token = given_local.partition("+")
        if not plus or (prefix, given_domain) not in ours:
            continue
        try:
            return tokens.read_lowercase(TokenPurpose.bounce, token)
        except UnknownToken:
            continue
    return None
