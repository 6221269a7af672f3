"""VERP (variable envelope return path): each message's bounce address names its delivery,
`bounces+<token>@domain` made from VERP_ADDRESS, so a bounce that quotes nothing of the message (no
Message-ID, no headers) still finds its ledger row. The token is signed (purpose `bounce`): an address
guessed or copied from another delivery names nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from newsletter.tokens import TokenPurpose, Tokens, UnknownToken


def return_path(tokens: Tokens, verp_address: str, delivery_id: int) -> str:
    """`bounces+<token>@domain` for `bounces@domain` and one delivery."""
    local, _, domain = verp_address.rpartition("@")
    return f"{local}+{tokens.make_lowercase(TokenPurpose.bounce, delivery_id)}@{domain}"


def delivery_of(tokens: Tokens, verp_address: str | None, addresses: Iterable[str | None]) -> int | None:
    """The delivery the first of `addresses` that is one of our return paths names, or None."""
    if not verp_address:
        return None
    local, _, domain = verp_address.lower().rpartition("@")
    for address in addresses:
        given_local, _, given_domain = (address or "").strip().strip("<>").lower().rpartition("@")
        prefix, plus, token = given_local.partition("+")
        if not plus or prefix != local or given_domain != domain:
            continue
        try:
            return tokens.read_lowercase(TokenPurpose.bounce, token)
        except UnknownToken:
            continue
    return None
