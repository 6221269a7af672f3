"""Readers' languages: gettext catalogs under newsletter/locale/, Babel's dates and plurals, and whose language.

English is the source language (the msgids); every other language is one catalog,
`newsletter/locale/<lang>/LC_MESSAGES/messages.po`, compiled to the `.mo` next to it by `make catalogs`
(committed, and a test checks that they match). Nothing is compiled or fetched at run time.

Whose language: the email chrome uses the digest's language (else the list's, else English); pages use
the subscriber's, else the list's, else the browser's `Accept-Language` (`page_language`).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.dates import format_date as babel_format_date
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

from newsletter.errors import Invalid

__all__ = [
    "DEFAULT",
    "LOCALE_DIR",
    "N_",
    "InvalidLanguage",
    "available",
    "check_language",
    "email_language",
    "format_date",
    "format_number",
    "language_name",
    "page_language",
    "parse_accept_language",
    "supported",
    "text_direction",
    "translations",
]

DEFAULT = "en"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
# An Accept-Language header is a few dozen bytes; a longer one is read only this far.
_MAX_ACCEPT = 512
_ACCEPT_PART = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*$")


class InvalidLanguage(Invalid):
    field = "language"


def N_(message: str) -> str:
    """Mark a string for the catalogs where it is defined; `translations(lang).gettext` translates it later."""
    return message


@cache
def available() -> tuple[str, ...]:
    """The languages readers can get: English and every language with a compiled catalog."""
    found = {path.parent.parent.name for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")}
    return (DEFAULT, *sorted(found - {DEFAULT}))


def supported(code: str | None) -> str | None:
    """The available language a tag asks for (`ru-RU` -> `ru`, `KK` -> `kk`), or None."""
    if not code:
        return None
    return _catalog_code(negotiate_locale([code.strip().replace("_", "-")], available(), sep="-"))


def _catalog_code(found: str | None) -> str | None:
    # Babel answers in the caller's spelling ("RU"); the catalogs' own spelling is what gets stored.
    return next((code for code in available() if found and code.lower() == found.lower()), None)


def check_language(code: str | None) -> str | None:
    """A language to store on a list or subscriber: None for blank, the catalog's code, or InvalidLanguage."""
    if code is None or not code.strip():
        return None
    found = supported(code)
    if found is None:
        raise InvalidLanguage.translatable(
            N_("language must be one of %(languages)s, got %(got)s"),
            languages=", ".join(available()),
            got=repr(code.strip()[:40]),
        )
    return found


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of an available language (English: the msgids themselves, with English plurals)."""
    if language == DEFAULT or language not in available():
        return NullTranslations()
    return Translations.load(LOCALE_DIR, [language], DOMAIN)


@cache
def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language, sep="-")
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT)


# CLDR's long date, except where running text writes it otherwise: our English says "26 April 2025" (CLDR's
# en is "April 26, 2025"), and Kazakh prose writes "2025 жылғы 26 сәуір" where CLDR abbreviates "2025 ж.".
_DATE_PATTERNS = {"en": "d MMMM y", "kk": "y 'жылғы' d MMMM"}


def format_date(date: dt.date, language: str = DEFAULT) -> str:
    """A date as the locale writes it in running text: `26 April 2025`, `26 апреля 2025 г.`, `2025 жылғы 26 сәуір`."""
    return babel_format_date(date, _DATE_PATTERNS.get(language, "long"), locale=_locale(language))


def format_number(number: int, language: str = DEFAULT) -> str:
    return format_decimal(number, locale=_locale(language))


def text_direction(language: str) -> str:
    """`ltr` or `rtl`, for the `dir` attribute of a page or an email in this language."""
    return _locale(language).text_direction


def language_name(language: str) -> str:
    """A language's own name for itself, as a language menu shows it (`Русский`, `Қазақ тілі`)."""
    name = _locale(language).get_display_name(_locale(language)) or language
    return name[:1].upper() + name[1:]


def parse_accept_language(header: str | None) -> list[str]:
    """The tags of an Accept-Language header, most wanted first (q=0 dropped, malformed parts ignored)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate((header or "")[:_MAX_ACCEPT].split(",")):
        match = _ACCEPT_PART.match(part)
        if match is None or match.group(1) == "*":
            continue
        try:
            quality = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        if 0 < quality <= 1:
            weighted.append((-quality, index, match.group(1)))
    return [tag for _, _, tag in sorted(weighted)]


def page_language(subscriber: str | None, mailing_list: str | None, accept_language: str | None) -> str:
    """A page's language: the subscriber's, else the list's, else the browser's best match, else English."""
    for choice in (subscriber, mailing_list):
        found = supported(choice)
        if found is not None:
            return found
    preferred = parse_accept_language(accept_language)
    return (_catalog_code(negotiate_locale(preferred, available(), sep="-")) or DEFAULT) if preferred else DEFAULT


def email_language(digest: str | None, mailing_list: str | None) -> str:
    """The language of an email's fixed text: the digest's, else the list's, else English."""
    return supported(digest) or supported(mailing_list) or DEFAULT
