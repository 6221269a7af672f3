"""The error families every entry point maps once: the CLI to one line and an exit status, the API to a status code.

A domain error subclasses exactly one of these bases and carries a message written for people. Each base also
subclasses the built-in exception it refines (`LookupError`, `ValueError`, …) so callers that catch those keep
working. Entry points map by base class, never by the concrete class: a new error needs no new mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self


class NewsletterError(Exception):
    """Any failure a user can act on; `str(error)` is the sentence to show them.

    An error a reader may meet on a public page is made with `translatable`: its message is an English
    msgid, marked with `i18n.N_` where it is raised (so `make catalogs` puts it in every catalog), whose
    `%(name)s` placeholders its parameters fill. A page shows `error.translated(gettext)`, in the page's
    language, formatted when it is shown; the API and the CLI show `str(error)`, in English.
    """

    message_id: str | None = None
    params: Mapping[str, object] = {}

    @classmethod
    def translatable(cls, message_id: str, /, *, english: str | None = None, **params: object) -> Self:
        """The error with a message a page can translate; `english`, when given, is what `str()` says instead
        of the filled-in msgid (a library's more technical reason, kept for the API and the CLI)."""
        error = cls(english if english is not None else message_id % params)
        error.message_id = message_id
        error.params = params
        return error

    def translated(self, gettext: Callable[[str], str]) -> str:
        """The message in the language of `gettext` (English, `str(self)`, when it has no msgid)."""
        if self.message_id is None:
            return str(self)
        return gettext(self.message_id) % self.params

    def __str__(self) -> str:
        # LookupError's str() quotes its argument as a repr; the message is for people, so print it plainly.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class NotFound(NewsletterError, LookupError):
    """The named object does not exist (API 404)."""


class Invalid(NewsletterError, ValueError):
    """The input is malformed or breaks a rule (API 422).

    `detail`, when a subclass sets it, is machine-readable context for the API's error body (the rejected
    rows of an import, each problem of a digest).
    """

    detail: Any = None


class Conflict(NewsletterError, ValueError):
    """The object's current state does not allow this (API 409)."""


class Forbidden(NewsletterError, PermissionError):
    """Who is asking may not do this (API 403)."""


class Unauthenticated(NewsletterError, PermissionError):
    """No valid credentials (API 401). `challenge` is the 401's WWW-Authenticate header (RFC 9110): the
    API's bearer tokens by default; None where no credentials would help (a bad signature)."""

    challenge: str | None = "Bearer"


class Unavailable(NewsletterError, RuntimeError):
    """A service we depend on failed: an SMTP server, SpamAssassin (API 502)."""
