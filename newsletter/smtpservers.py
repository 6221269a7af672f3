"""The SMTP server pool's configuration: `smtp://` and `smtps://` URLs parsed into servers, with their limits.

Apart from the mailer, so that settings can validate NEWSLETTER_SMTP_URL without importing the transports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

_OPTIONS = ("starttls", "max_connections", "rate", "timeout", "pipelining", "verify")


@dataclass(frozen=True)
class SmtpServer:
    """One server of the pool, as parsed from an `smtp://` or `smtps://` URL."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    max_connections: int = 4
    rate: float | None = None  # messages per second on this server; None: as fast as it takes
    timeout: float = 30.0
    pipelining: bool = True  # used only when the server advertises PIPELINING
    verify: bool = True

    @property
    def display(self) -> str:
        """The URL without the password, for logs and error messages."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{user}{host}:{self.port}"


def _bool(name: str, value: str, where: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{where}: option {name}={value!r} must be true or false")


def _number(name: str, value: str, where: str, kind: type[int] | type[float]) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{where}: option {name}={value!r} must be a positive number") from None
    if number <= 0:
        raise ValueError(f"{where}: option {name}={value!r} must be a positive number")
    return number


def _parse_one(url: str) -> SmtpServer:
    where = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)  # never echo a password
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"SMTP URL {where!r}: {error}") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP URL {where!r}: scheme must be smtp:// or smtps://, not {parts.scheme or 'nothing'!r}")
    if not parts.hostname:
        raise ValueError(f"SMTP URL {where!r}: no host name")
    if parts.path not in ("", "/"):
        raise ValueError(f"SMTP URL {where!r}: unexpected path {parts.path!r}")
    implicit = parts.scheme == "smtps"
    values: dict[str, object] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name not in _OPTIONS:
            raise ValueError(f"SMTP URL {where!r}: unknown option {name!r} (known: {', '.join(_OPTIONS)})")
        if name in ("starttls", "verify"):
            values[name] = _bool(name, value, f"SMTP URL {where!r}")
        elif name == "pipelining":
            if value not in ("auto", "off"):
                raise ValueError(f"SMTP URL {where!r}: pipelining must be auto or off, not {value!r}")
            values[name] = value == "auto"
        elif name == "max_connections":
            values[name] = int(_number(name, value, f"SMTP URL {where!r}", int))
        else:
            values[name] = _number(name, value, f"SMTP URL {where!r}", float)
    if implicit and values.get("starttls"):
        raise ValueError(f"SMTP URL {where!r}: smtps:// is already TLS; drop starttls=true")
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        implicit_tls=implicit,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        **values,  # type: ignore[arg-type]
    )


def parse_smtp_urls(value: str) -> list[SmtpServer]:
    """Parse `smtp://user:pass@host:587?starttls=true,smtps://host2` into servers.

    Separate several servers with commas (percent-encode a comma in a password as %2C).
    Options: starttls, verify (true|false), max_connections, rate (msgs/s), timeout (s),
    pipelining (auto|off). Raises ValueError with a message naming the offending part.
    """
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise ValueError("SMTP URL is empty; expected e.g. smtp://user:pass@host:587?starttls=true")
    return [_parse_one(url) for url in urls]
