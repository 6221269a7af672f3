"""Mail transports behind one small protocol: an SMTP server pool, an outbox directory, memory."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from newsletter import metrics
from newsletter.pacing import LocalPacer, Pacer, is_pacing_signal
from newsletter.smtpreplies import enhanced_status
from newsletter.smtpservers import SmtpServer, parse_smtp_urls

__all__ = [
    "MailSession",
    "Mailer",
    "MemoryMailer",
    "OutboxMailer",
    "SMTPMailer",
    "SendResult",
    "SentMessage",
    "SmtpServer",
    "WireBytes",
    "classify",
    "get_mailer",
    "parse_smtp_urls",
]


@dataclass(frozen=True)
class SendResult:
    """The server's final answer for one message; code 0 means no answer (connection error)."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def throttled(self) -> bool:
        """A pacing signal: the server asks us to slow down (421, 4.7.x, 4.2.1, "too many ...")."""
        return is_pacing_signal(self.code, self.text)


def classify(result: SendResult) -> Literal["sent", "retry", "failed"]:
    """DESIGN §3 step 4: 2xx sent; 4xx and no answer retried; 5xx failed except mailbox full."""
    if result.ok:
        return "sent"
    if result.permanent:
        status = enhanced_status(result.text)
        # RFC 3463 X.2.2 (mailbox full) and RFC 5321 552 are soft in practice: retry later
        if result.code == 552 or (status is not None and status[1:] == (2, 2)):
            return "retry"
        return "failed"
    return "retry"


class MailSession(Protocol):
    """One connection, used for one batch."""

    def send(self, envelope_from: str, recipient: str, data: bytes) -> SendResult: ...

    def send_many(self, items: Iterable[tuple[str, str, bytes]]) -> Iterator[SendResult]:
        """Send in order (pipelined where the server allows) and yield one result per item."""
        ...

    def close(self) -> None: ...


class Mailer(Protocol):
    def session(self) -> AbstractContextManager[MailSession]: ...


# --- in memory and outbox ----------------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    envelope_from: str
    recipient: str
    data: bytes


class _SimpleSession:
    """A session whose messages go to a callable; shared by the memory and outbox mailers."""

    def __init__(self, deliver: Callable[[str, str, bytes], SendResult]) -> None:
        self._deliver = deliver

    def send(self, envelope_from: str, recipient: str, data: bytes) -> SendResult:
        return self._deliver(envelope_from, recipient, data)

    def send_many(self, items: Iterable[tuple[str, str, bytes]]) -> Iterator[SendResult]:
        for envelope_from, recipient, data in items:
            yield self._deliver(envelope_from, recipient, data)

    def close(self) -> None:
        pass


class MemoryMailer:
    """Keeps accepted messages in `.sent`; `responses` can make chosen recipients fail."""

    def __init__(self, responses: Mapping[str, SendResult] | Callable[[str], SendResult | None] | None = None) -> None:
        self.sent: list[SentMessage] = []
        self.sessions_opened = 0
        self.responses = responses
        self._lock = threading.Lock()

    def _deliver(self, envelope_from: str, recipient: str, data: bytes) -> SendResult:
        responses = self.responses
        canned = responses(recipient) if callable(responses) else (responses or {}).get(recipient)
        if canned is not None and not canned.ok:
            return canned
        with self._lock:
            self.sent.append(SentMessage(envelope_from, recipient, data))
            number = len(self.sent)
        return canned or SendResult(250, f"2.0.0 Ok: queued as mem{number}")

    @contextlib.contextmanager
    def session(self) -> Iterator[MailSession]:
        with self._lock:
            self.sessions_opened += 1
        yield _SimpleSession(self._deliver)


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class OutboxMailer:
    """Writes each message to `<directory>/<UTC time>-<hash>.eml`, for development and demos."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _deliver(self, envelope_from: str, recipient: str, data: bytes) -> SendResult:
        head = data[: data.find(b"\r\n\r\n") + 2]
        match = _MESSAGE_ID.search(head)
        # the hash keeps names unique and stable; the time prefix makes `ls` show sending order
        digest = hashlib.sha256((match[1] if match else data) + recipient.encode()).hexdigest()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.directory / f"{stamp}-{digest[:16]}.eml"
        tmp = self.directory / f".{path.name}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a reader never sees half a message
        except OSError as error:
            return SendResult(0, f"cannot write to outbox {self.directory}: {error.strerror}")
        return SendResult(250, f"2.0.0 Ok: written {path.name}")

    @contextlib.contextmanager
    def session(self) -> Iterator[MailSession]:
        yield _SimpleSession(self._deliver)


# --- SMTP pool ---------------------------------------------------------------------------------

_DOWN_SECONDS = 30.0  # how long a server that refused a connection is skipped


class _ServerState:
    """Connection slots and health of one server, shared by all sessions; its pace is the pacer's."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.key = server.display  # the pacer's name for it, the same in every process
        self.slots = threading.BoundedSemaphore(server.max_connections)
        self.active = 0
        self.down_until = 0.0


class _Disconnected(Exception):
    """The connection is gone; `data_sent` says whether the current message may have arrived."""

    def __init__(self, reason: str, data_sent: bool) -> None:
        super().__init__(reason)
        self.data_sent = data_sent


class WireBytes(bytes):
    """A message in SMTP wire form already: CRLF line endings only and no line starting with "."
    (the composer's output), so `_stuff` passes it through: its scans cost more than composing it."""

    __slots__ = ()


def _stuff(data: bytes) -> bytes:
    """CRLF line endings and leading dots doubled (RFC 5321 §4.5.2), plus the final CRLF."""
    if isinstance(data, WireBytes):
        return data if data.endswith(b"\r\n") else data + b"\r\n"
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


_BAD_ADDRESS = re.compile(r"[\s<>\x00-\x1f\x7f]")


# Opens the warm spare connections of the sessions of this process (see _SMTPSession._warm_spare).
_OPENER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="smtp-spare")


class _SMTPSession:
    """One SMTP connection for a batch, reconnecting (maybe to another server) when dropped.

    A server that closed the connection with a 421 (too many messages per connection, too fast) will do so
    again: from then on the session keeps a spare connection to it, opened in the background while it
    sends, so the next 421 costs a switch instead of a TCP connect, greeting and EHLO on the critical path.
    """

    pipeline_across_messages = True  # off only to measure what it gains
    keep_warm_spare = True  # likewise (bench/reconnect.py)

    def __init__(self, mailer: SMTPMailer) -> None:
        self._mailer = mailer
        self._state: _ServerState | None = None
        self._conn: smtplib.SMTP | None = None
        self._pipelining = False
        self._dead: str | None = None  # set when no server could be reached: fail fast after
        self._spare: Future[smtplib.SMTP] | None = None  # holds a slot of `_spare_state` while set
        self._spare_state: _ServerState | None = None

    @property
    def server(self) -> str:
        """host:port of the server this session is connected to (a metrics label)."""
        state = self._state
        return metrics.server_label(state.key) if state is not None else "none"

    # connection handling

    def _warm_spare(self, state: _ServerState) -> None:
        """Start opening a spare connection to `state`'s server, if none is and a slot is free."""
        if not self.keep_warm_spare or self._spare is not None or self._dead is not None:
            return
        if not state.slots.acquire(blocking=False):
            return
        self._spare_state = state
        self._spare = _OPENER.submit(self._open, state.server)

    def _take_spare(self) -> bool:
        """Switch to the spare connection; False (and nothing held) when there is none or it failed."""
        spare, state = self._spare, self._spare_state
        if spare is None or state is None:
            return False
        self._spare = self._spare_state = None
        try:
            conn = spare.result(timeout=state.server.timeout)
        except Exception:
            spare.add_done_callback(_close_opened)
            state.slots.release()
            return False
        with self._mailer._lock:
            state.active += 1
        metrics.SMTP_CONNECTIONS.labels(metrics.server_label(state.key)).inc()
        self._state, self._conn = state, conn
        self._pipelining = state.server.pipelining and conn.has_extn("pipelining")
        self._warm_spare(state)  # the server hangs up on us: keep the next one warm
        return True

    def _connect(self) -> None:
        if self._take_spare():
            return
        errors: list[str] = []
        for state in self._mailer._candidates():
            if not state.slots.acquire(timeout=state.server.timeout):
                errors.append(f"{state.server.display}: all connections busy")
                continue
            try:
                conn = self._open(state.server)
            except (OSError, smtplib.SMTPException) as error:
                state.slots.release()
                state.down_until = time.monotonic() + _DOWN_SECONDS
                errors.append(f"{state.server.display}: {_describe(error)}")
                continue
            with self._mailer._lock:
                state.active += 1
            metrics.SMTP_CONNECTIONS.labels(metrics.server_label(state.key)).inc()
            self._state, self._conn = state, conn
            self._pipelining = state.server.pipelining and conn.has_extn("pipelining")
            return
        self._dead = "no SMTP server reachable: " + "; ".join(errors)
        raise _Disconnected(self._dead, data_sent=False)

    def _open(self, server: SmtpServer) -> smtplib.SMTP:
        # loading the CA store costs ~25 ms: only for servers that use TLS, once
        context = self._mailer._tls_context(server) if server.implicit_tls or server.starttls else None
        conn: smtplib.SMTP
        try:
            # the constructor connects and raises SMTPConnectError unless greeted with 220
            if server.implicit_tls:
                conn = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout, context=context)
            else:
                conn = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        except smtplib.SMTPConnectError as error:
            if error.smtp_code == 421:  # "too many connections" at the greeting
                self._mailer.pacer.record(self._mailer._state_for(server).key, 421, _describe(error)[4:])
            raise
        try:
            conn.ehlo()
            if server.starttls:
                # never fall back to plain text when TLS was asked for
                conn.starttls(context=context)
                conn.ehlo()
            if server.username:
                conn.login(server.username, server.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        conn, state = self._conn, self._state
        self._conn = self._state = None
        if conn is not None:
            conn.close()
        if state is not None:
            with self._mailer._lock:
                state.active -= 1
            metrics.SMTP_CONNECTIONS.labels(metrics.server_label(state.key)).dec()
            state.slots.release()

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                conn.putcmd("quit")
                conn.getreply()
        self._drop()
        spare, state = self._spare, self._spare_state
        self._spare = self._spare_state = None
        if spare is not None and state is not None:
            spare.add_done_callback(_close_opened)  # now, or once it is open
            state.slots.release()

    # the protocol

    def _write(self, data: bytes, data_sent: bool = False) -> None:
        assert self._conn is not None
        try:
            self._conn.send(data)
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            self._drop()
            raise _Disconnected(_describe(error), data_sent) from None

    def _reply(self, data_sent: bool = False) -> SendResult:
        assert self._conn is not None
        try:
            code, text = self._conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            self._drop()
            raise _Disconnected(_describe(error), data_sent) from None
        result = SendResult(max(code, 0), text.decode("utf-8", "replace").replace("\n", " "))
        if code == 421:  # the server is closing the connection
            state = self._state
            self._drop()
            if state is not None:
                self._warm_spare(state)
        return result

    def _replies(self, count: int) -> list[SendResult]:
        """Read up to `count` replies; after a 421 the server has hung up, so it repeats."""
        replies: list[SendResult] = []
        while len(replies) < count:
            if self._conn is None:
                replies.append(replies[-1])
            else:
                replies.append(self._reply())
        return replies

    def send(self, envelope_from: str, recipient: str, data: bytes) -> SendResult:
        return next(iter(self.send_many([(envelope_from, recipient, data)])))

    def send_many(self, items: Iterable[tuple[str, str, bytes]]) -> Iterator[SendResult]:
        queue = iter(items)
        item = next(queue, None)
        following = next(queue, None) if item is not None else None
        presented = False  # item's MAIL/RCPT/DATA already went out behind the previous message
        retried = False
        try:
            while item is not None:
                try:
                    result, presented = self._send_one(item, following, presented)
                except _Disconnected as lost:
                    presented = False
                    if not (lost.data_sent or retried or self._dead):
                        retried = True  # none of this message reached the server: try once more
                        continue
                    # the message may have arrived: report no answer, never guess success
                    result = SendResult(0, f"connection lost: {lost}" if lost.data_sent else str(lost))
                yield result
                item, retried = following, False
                following = next(queue, None) if following is not None else None
        finally:
            if presented:
                # abandoned after the next DATA went out: the server awaits content, so hang up
                self._drop()

    def _send_one(
        self, item: tuple[str, str, bytes], following: tuple[str, str, bytes] | None, presented: bool
    ) -> tuple[SendResult, bool]:
        """Send one message; returns its result and whether `following`'s commands went out."""
        envelope_from, recipient, _ = item
        if not _valid_envelope(envelope_from, recipient):
            return SendResult(501, "5.1.3 not sent: malformed envelope address"), False
        if self._dead is not None:
            return SendResult(0, self._dead), False
        if self._conn is None:
            presented = False
            self._connect()
        assert self._conn is not None and self._state is not None
        utf8 = not (envelope_from + recipient).isascii()
        if utf8 and not self._conn.has_extn("smtputf8"):
            return SendResult(553, "5.6.7 not sent: server does not support SMTPUTF8"), False
        state = self._state
        if not presented:
            self._mailer.pacer.acquire(state.key, state.server.rate)
        result, presented = self._transact(item, following, presented)
        if result.code:  # a server's answer; a lost connection says nothing about the pace
            self._mailer.pacer.record(state.key, result.code, result.text)
        return result, presented

    def _transact(
        self, item: tuple[str, str, bytes], following: tuple[str, str, bytes] | None, presented: bool
    ) -> tuple[SendResult, bool]:
        assert self._conn is not None and self._state is not None
        envelope_from, recipient, data = item
        commands = _commands(envelope_from, recipient)
        if self._pipelining:
            if not presented:
                self._write(b"".join(commands))
            mail, rcpt, start = self._replies(3)
        else:
            replies: list[SendResult] = []
            for command in commands:
                self._write(command)
                replies += self._replies(1)
                if not 200 <= replies[-1].code < 400:
                    break
            mail, rcpt, start = (replies + [replies[-1]] * 2)[:3]
        if start.code != 354:
            failure = next(r for r in (mail, rcpt, start) if not 200 <= r.code < 400)
            if self._conn is not None:
                self._write(b"RSET\r\n")  # MAIL may have been accepted: clear the transaction
                self._replies(1)
            return failure, False

        payload = _stuff(data) + b".\r\n"
        pipelined = (
            self._pipelining
            and self.pipeline_across_messages
            and following is not None
            and _valid_envelope(following[0], following[1])
            and (following[0] + following[1]).isascii()
        )
        if pipelined:
            # RFC 2920 §3.1: message content may open a group; the next MAIL/RCPT/DATA follow it,
            # which saves a round trip per message
            assert following is not None
            # the next MAIL leaves now: it needs its token first, or pipelining would outrun the pace
            self._mailer.pacer.acquire(self._state.key, self._state.server.rate)
            payload += b"".join(_commands(following[0], following[1]))
        self._write(payload, data_sent=True)
        result = self._reply(data_sent=True)
        return result, pipelined and self._conn is not None


def _close_opened(opened: Future[smtplib.SMTP]) -> None:
    """Close a spare connection nobody will use (a no-op for one that failed to open)."""
    if opened.cancelled() or opened.exception() is not None:
        return
    conn = opened.result()
    with contextlib.suppress(OSError, smtplib.SMTPException):
        conn.putcmd("quit")
        conn.getreply()
    conn.close()


def _commands(envelope_from: str, recipient: str) -> list[bytes]:
    option = "" if (envelope_from + recipient).isascii() else " SMTPUTF8"
    return [
        f"MAIL FROM:<{envelope_from}>{option}\r\n".encode(),
        f"RCPT TO:<{recipient}>\r\n".encode(),
        b"DATA\r\n",
    ]


def _valid_envelope(envelope_from: str, recipient: str) -> bool:
    # an empty MAIL FROM (null sender) is legal; an empty recipient is not
    return bool(recipient) and not _BAD_ADDRESS.search(envelope_from + recipient)


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error
        return f"{error.smtp_code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}"
    if isinstance(error, socket.timeout):
        return "timed out"
    return str(error) or type(error).__name__


class SMTPMailer:
    """A pool of SMTP servers: least-loaded first, slowed and unreachable servers last.

    `pacer` sets each server's pace (newsletter/pacing.py); share one through Redis between processes.
    """

    def __init__(self, servers: list[SmtpServer] | str, pacer: Pacer | None = None) -> None:
        if isinstance(servers, str):
            servers = parse_smtp_urls(servers)
        if not servers:
            raise ValueError("SMTPMailer needs at least one server")
        self.servers = servers
        self.pacer: Pacer = pacer or LocalPacer()
        self._states = [_ServerState(s) for s in servers]
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def _tls_context(self, server: SmtpServer) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(server.verify)
            if context is None:
                context = ssl.create_default_context()
                if not server.verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                self._contexts[server.verify] = context
            return context

    def _state_for(self, server: SmtpServer) -> _ServerState:
        return next(s for s in self._states if s.server is server)

    def _candidates(self) -> list[_ServerState]:
        """Servers in the order to try: up before down, then not slowed, least loaded, rotating."""
        now = time.monotonic()
        turn = next(self._turn)
        count = len(self._states)
        with self._lock:
            return sorted(
                self._states,
                key=lambda s: (
                    s.down_until > now,
                    self.pacer.slowed(s.key),
                    s.active / s.server.max_connections,
                    (self._states.index(s) - turn) % count,
                ),
            )

    @contextlib.contextmanager
    def session(self) -> Iterator[MailSession]:
        session = _SMTPSession(self)
        try:
            yield session
        finally:
            session.close()


def get_mailer(smtp_url: str | None, outbox_dir: Path, pacer: Pacer | None = None) -> Mailer:
    """SMTP when a URL is configured (paced by `pacer`, else per process), else `.eml` files in the outbox."""
    if smtp_url:
        return SMTPMailer(parse_smtp_urls(smtp_url), pacer)
    return OutboxMailer(outbox_dir)
