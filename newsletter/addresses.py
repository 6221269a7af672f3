"""Email addresses: validation and the one normalised form every table stores."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import Invalid
from newsletter.models import Subscriber, column_length
from newsletter.text import single_line

NAME_LENGTH = column_length(Subscriber.name)


class InvalidEmail(Invalid):
    """The address cannot receive mail; the message says why."""

    field = "email"


class InvalidName(Invalid):
    """A person's name that cannot be stored or put in a To header; the message says why."""

    field = "name"


def check_name(name: str, *, lenient: bool = False) -> str:
    """The display name that goes with an address: one line, no NUL (PostgreSQL refuses it), column-sized.

    Whitespace runs collapse to one space. `lenient` (the public forms, where a refusal would only annoy)
    folds line breaks and cuts an over-long name to the column instead of refusing them; a NUL is refused
    either way, as no person's name holds one.
    """
    if "\x00" in name:
        raise InvalidName("name: contains a NUL character")
    if not lenient and any(ch in name for ch in "\r\n"):
        raise InvalidName("name: must be a single line")
    clean = " ".join(single_line(name).split())
    if len(clean) > NAME_LENGTH:
        if not lenient:
            raise InvalidName(f"name: longer than {NAME_LENGTH} characters")
        clean = clean[:NAME_LENGTH].rstrip()
    return clean


def normalise_email(address: str) -> str:
    """Validate the syntax (no DNS: this runs at import speed) and return the normalised form.

    On top of email-validator's rules: the local part is at most 64 octets (RFC 5321), and no part may mix
    Latin, Cyrillic or Greek letters (`exampl\u0435.com` with a Cyrillic "е" imitates example.com).
    A name written wholly in a lookalike script still passes: telling it apart needs the confusables table.
    """
    if any(ch in address for ch in "\r\n"):
        raise InvalidEmail("an email address cannot contain line breaks")
    if "\x00" in address:
        raise InvalidEmail("an email address cannot contain a NUL character")
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    if len(result.local_part.encode("utf-8")) > 64:
        raise InvalidEmail("the part before the @-sign is longer than 64 characters")
    for part in (result.local_part, *result.domain.split(".")):
        scripts = {unicodedata.name(ch, "?").split(" ", 1)[0] for ch in part if ch.isalpha()} & _LOOKALIKE_SCRIPTS
        if len(scripts) > 1:
            raise InvalidEmail(
                f"{part!r} mixes {' and '.join(sorted(s.title() for s in scripts))} letters, "
                "which is how addresses imitate others; please check the address"
            )
    # Domains are case-insensitive; local parts technically are not, but every real provider treats them so.
    return result.normalized.lower()


_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"})
