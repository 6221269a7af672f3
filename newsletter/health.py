"""What the settings page checks: an SMTP server of the pool step by step, the DKIM record to publish and
what DNS answers for it, the queue depth, the schedulers seen recently, the database and the broker.

Each check answers with what happened in words (the exact SMTP reply, the DNS error) rather than raising:
a failed check is a finding to show, not an error of the page.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from importlib import metadata

from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from newsletter import dkim, queues
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.models import Heartbeat
from newsletter.smtpservers import SmtpServer

CELERY_QUEUES = queues.ALL  # the queues worker/ routes tasks to
RECENT = dt.timedelta(minutes=10)
CHECK_TIMEOUT = 10.0  # seconds: a button press should not hang for the pool's 30 s timeout


@dataclass(frozen=True)
class Step:
    name: str  # connect, EHLO, STARTTLS, AUTH
    ok: bool
    reply: str  # the server's reply ("250 mail.example.org"), or what went wrong


@dataclass
class SmtpCheck:
    server: str  # the URL without its password
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)


def _reply(code: int, message: bytes | str) -> str:
    text_ = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text_.split())}".strip()


def _failure(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return _reply(error.smtp_code, error.smtp_error)
    if isinstance(error, socket.timeout | TimeoutError):
        return "no answer: timed out"
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return f"not offered by the server: {error}"
    return str(error) or type(error).__name__


def _tls(server: SmtpServer) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not server.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_smtp(server: SmtpServer, *, timeout: float = CHECK_TIMEOUT) -> SmtpCheck:
    """Connect, EHLO, STARTTLS (when the URL asks for it), AUTH (when it has a user): each step with the
    server's reply, stopping at the first failure. Nothing is sent."""
    check = SmtpCheck(server.display)
    try:
        if server.implicit_tls:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(timeout=min(timeout, server.timeout), context=_tls(server))
        else:
            conn = smtplib.SMTP(timeout=min(timeout, server.timeout))
        # Connecting apart from the constructor keeps the greeting to show; STARTTLS checks the certificate
        # against `_host`, which only the constructor sets.
        conn._host = server.host  # type: ignore[attr-defined]
        code, greeting = conn.connect(server.host, server.port)
    except (OSError, smtplib.SMTPException) as error:
        check.steps.append(Step("connect", False, _failure(error)))
        return check
    check.steps.append(Step("connect", code == 220, _reply(code, greeting)))
    try:
        if code == 220:
            _after_greeting(conn, server, check)
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
    return check


def _after_greeting(conn: smtplib.SMTP, server: SmtpServer, check: SmtpCheck) -> None:
    steps: list[tuple[str, object]] = [("EHLO", conn.ehlo)]
    if server.starttls:
        steps += [("STARTTLS", lambda: conn.starttls(context=_tls(server))), ("EHLO after STARTTLS", conn.ehlo)]
    if server.username:
        steps.append(("AUTH", lambda: conn.login(server.username or "", server.password or "")))
    for name, run in steps:
        try:
            code, message = run()  # type: ignore[operator]
        except (OSError, smtplib.SMTPException, ssl.SSLError) as error:
            check.steps.append(Step(name, False, _failure(error)))
            return
        ok = 200 <= code < 300
        first_line = (message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)).splitlines()
        check.steps.append(Step(name, ok, _reply(code, first_line[0] if first_line else "")))
        if not ok:
            return


@dataclass(frozen=True)
class DkimRecord:
    name: str  # where to publish it: <selector>._domainkey.<domain>
    value: str  # the TXT record derived from the configured key
    dns: str  # what DNS says, in words
    published: bool | None  # True: DNS has this key; False: it has another or none; None: could not check


def dkim_record(settings: Settings, *, resolver: object | None = None) -> DkimRecord | None:
    """The TXT record of the configured DKIM key and whether DNS serves it; None when DKIM is off."""
    signer = dkim.signer_for(settings)
    if signer is None:
        return None
    name = f"{signer.selector}._domainkey.{signer.domain}"
    value = signer.dns_record()
    published, said = _lookup(name, value, resolver)
    return DkimRecord(name, value, said, published)


def _lookup(name: str, expected: str, resolver: object | None) -> tuple[bool | None, str]:
    try:
        import dns.exception
        import dns.resolver
    except ImportError:  # pragma: no cover - email-validator brings dnspython
        return None, "cannot check: dnspython is not installed"
    try:
        # A machine without /etc/resolv.conf fails here already (NoResolverConfiguration).
        chosen = resolver if resolver is not None else dns.resolver.Resolver()
        answer = chosen.resolve(name, "TXT", lifetime=3.0)  # type: ignore[attr-defined]
    except dns.resolver.NXDOMAIN:
        return False, f"DNS has no record at {name}: publish the one below"
    except dns.resolver.NoAnswer:
        return False, f"DNS has {name} but no TXT record there: publish the one below"
    except dns.exception.DNSException as error:
        return None, f"cannot check: DNS is unreachable from this server ({error})"
    found = ["".join(part.decode() for part in record.strings) for record in answer]
    key = _key_of(expected)
    if any(_key_of(record) == key for record in found):
        return True, "DNS serves this key"
    return False, "DNS serves another key: " + "; ".join(found)[:300]


def _key_of(record: str) -> str:
    tags = dict(part.strip().partition("=")[::2] for part in record.split(";") if "=" in part)
    return "".join(tags.get("p", "").split())


@dataclass(frozen=True)
class Service:
    name: str
    ok: bool | None  # None: not configured
    detail: str


def database_state(session: Session) -> Service:
    """The database answers, and at which schema revision (the page itself needed it, so it is up)."""
    connection = session.connection()
    connection.execute(text("SELECT 1"))
    # Alembic's own table, read directly: importing Alembic to read one row costs a web process ~10 MB.
    revision = None
    if inspect(connection).has_table("alembic_version"):
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return Service("database", True, f"{connection.dialect.name}, schema revision {revision or 'none'}")


def broker_state(settings: Settings) -> tuple[Service, dict[str, int]]:
    """The broker's state and, for a Redis broker, how many tasks wait in each Celery queue."""
    if not settings.broker_url:
        return Service("broker", None, "none: tasks run inside the web process (embedded mode)"), {}
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return Service("broker", None, "configured; queue depth is shown for Redis brokers only"), {}
    import redis  # only with a Redis broker, as newsletter.throttle does

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        depths = {queue: int(client.llen(queue)) for queue in CELERY_QUEUES}
    except redis.RedisError as error:
        return Service("broker", False, f"Redis does not answer: {error}"), {}
    finally:
        client.close()
    return Service("broker", True, "Redis answers"), depths


@dataclass(frozen=True)
class Seen:
    name: str
    holder: str
    seen_at: dt.datetime
    recent: bool


def schedulers(session: Session, now: dt.datetime | None = None) -> list[Seen]:
    """The heartbeats: Celery beat's sweep (`beat`) and the embedded scheduler of `newsletter serve`."""
    now = now or utcnow()
    rows = session.scalars(select(Heartbeat).order_by(Heartbeat.name))
    return [Seen(row.name, row.holder, row.seen_at, now - row.seen_at <= RECENT) for row in rows]


def version() -> str:
    try:
        return metadata.version("newsletter")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "unknown"
