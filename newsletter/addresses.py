"""Email addresses: validation and the one normalised form every table stores."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import Invalid
from newsletter.i18n import N_
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
        raise InvalidName.translatable(
            N_("the name contains a character that cannot be stored (NUL); please type it again"),
            english="name: contains a NUL character",
        )
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
    if not address.strip():
        raise InvalidEmail.translatable(N_("please type your email address"), english="the email address is empty")
    if any(ch in address for ch in "\r\n"):
        raise InvalidEmail.translatable(N_("an email address cannot contain line breaks"))
    if "\x00" in address:
        raise InvalidEmail.translatable(N_("an email address cannot contain a NUL character"))
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail.translatable(_reason_of(str(exc)), english=str(exc)) from None
    if len(result.local_part.encode("utf-8")) > 64:
        raise InvalidEmail.translatable(N_("the part before the @-sign is longer than 64 characters"))
    for part in (result.local_part, *result.domain.split(".")):
        scripts = {unicodedata.name(ch, "?").split(" ", 1)[0] for ch in part if ch.isalpha()} & _LOOKALIKE_SCRIPTS
        if len(scripts) > 1:
            raise InvalidEmail.translatable(
                N_(
                    "“%(part)s” mixes letters of different alphabets, which is how addresses imitate others; "
                    "please check the address"
                ),
                english=f"{part!r} mixes {' and '.join(sorted(s.title() for s in scripts))} letters, "
                "which is how addresses imitate others; please check the address",
                part=part,
            )
    # Domains are case-insensitive; local parts technically are not, but every real provider treats them so.
    return result.normalized.lower()


_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"})

# email-validator explains a refusal in English only, in some fifty sentences and no codes: a reader is told
# the gist in their language, from the first of these phrases found in its sentence (the API and the CLI
# keep its exact words).
_VALIDATOR_REASONS = (
    ("must have an @-sign", N_("an email address needs an @-sign, as in name@example.org")),
    ("something before the @-sign", N_("there must be something before the @-sign")),
    ("something after the @-sign", N_("there must be something after the @-sign")),
    ("should have a period", N_("the part after the @-sign needs a period, as in example.org")),
    ("top-level domain", N_("the part after the @-sign does not end in a known domain, such as .org or .kz")),
    ("special-use or reserved", N_("the part after the @-sign is a reserved name that cannot receive email")),
    ("too long", N_("the address is too long")),
    ("so many characters", N_("the address is too long")),
    ("angle bracket", N_("type the address alone, without a name or angle brackets")),
    ("display name", N_("type the address alone, without a name or angle brackets")),
    ("bracket", N_("an IP address in place of a domain is not accepted")),
    ("quot", N_("quotation marks are not accepted in an address")),
    ("period", N_("a period or a hyphen is out of place")),
    ("hyphen", N_("a period or a hyphen is out of place")),
    ("at-sign", N_("type the address with an ordinary @-sign")),
    ("character", N_("the address contains a character an email address cannot have")),
)


def _reason_of(sentence: str) -> str:
    """The msgid that tells a reader why email-validator refused an address."""
    lowered = sentence.lower()
    return next(
        (reason for phrase, reason in _VALIDATOR_REASONS if phrase in lowered), N_("this is not an email address")
    )
