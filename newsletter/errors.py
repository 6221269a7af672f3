"""The error families every entry point maps once: the CLI to one line and an exit status, the API to a status code.

A domain error subclasses exactly one of these bases and carries a message written for people. Each base also
subclasses the built-in exception it refines (`LookupError`, `ValueError`, …) so callers that catch those keep
working. Entry points map by base class, never by the concrete class: a new error needs no new mapping.
"""

from __future__ import annotations

from typing import Any


class NewsletterError(Exception):
    """Any failure a user can act on; `str(error)` is the sentence to show them."""

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
