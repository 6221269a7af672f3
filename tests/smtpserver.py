"""A real SMTP server (aiosmtpd) on loopback that records what it receives and injects faults."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import random
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DROP = "DROP"  # a response that makes the server hang up without answering


class AboveRate:
    """Fault rule: `421 4.7.0 too fast` to the messages above `rate` per second (a token bucket holding
    `burst`), like a server that really throttles; counts what it accepted and refused."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.accepted = 0
        self.refused = 0
        self.accepted_at: list[float] = []  # time.monotonic() of each accepted message
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, rcpt: str) -> str | None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                self.accepted += 1
                self.accepted_at.append(now)
                return None
            self.refused += 1
            return "421 4.7.0 too fast, slow down"

    def steady_rate(self) -> float:
        """Accepted messages per second between the first and the last tenth of them (start-up and the
        tail of retries left out)."""
        times = self.accepted_at
        low, high = len(times) // 10, len(times) * 9 // 10
        return (high - low) / (times[high] - times[low])


class RandomFaults:
    """Fault rule: seeded random temporary failures on a share of messages, and `550 5.1.1` for `unknown`
    addresses; `served` counts the answers by code."""

    def __init__(
        self,
        seed: int,
        *,
        unknown: frozenset[str] | set[str] = frozenset(),
        share_421: float = 0.07,
        share_451: float = 0.07,
        share_452: float = 0.06,
    ) -> None:
        self.rng = random.Random(seed)
        self.unknown = frozenset(unknown)
        self.bounds = (share_421, share_421 + share_451, share_421 + share_451 + share_452)
        self.served: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, rcpt: str) -> str | None:
        with self._lock:
            if rcpt in self.unknown:
                answer: str | None = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
            else:
                roll = self.rng.random()
                answer = (
                    "421 4.7.0 Too many messages, slow down"
                    if roll < self.bounds[0]
                    else "451 4.3.0 Temporary lookup failure"
                    if roll < self.bounds[1]
                    else "452 4.3.1 Insufficient system storage"
                    if roll < self.bounds[2]
                    else None
                )
            self.served[answer[:3] if answer else "250"] += 1
            return answer


@dataclass(frozen=True)
class ReceivedMessage:
    envelope_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: EmailMessage


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for localhost/127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class _RecordingSMTP(SMTP):
    """aiosmtpd's protocol plus connection counting, 421 hang-ups and the DROP fault."""

    def __init__(self, owner: RecordingSMTPServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:  # not the second call that STARTTLS makes
            with self._owner._lock:
                self._owner.connections += 1
        super().connection_made(transport)

    async def push(self, status: str) -> None:  # type: ignore[override]
        if status == DROP:
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]
            return
        await super().push(status)
        if status.startswith("421") and self.transport is not None:
            self.transport.close()


class _Handler:
    def __init__(self, owner: RecordingSMTPServer) -> None:
        self._owner = owner

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to the hook when one is defined
        if self._owner.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    def _fault(self, stage: str, rcpt: str) -> str | None:
        hook = self._owner.responses
        if hook is None or self._owner.respond_at != stage:
            return None
        return hook(rcpt)

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        fault = self._fault("rcpt", address)
        if fault:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            fault = self._fault("data", rcpt)
            if fault:
                return fault
        data = cast(bytes, envelope.original_content or envelope.content)
        received = ReceivedMessage(
            envelope_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            message=cast(EmailMessage, email.message_from_bytes(data, policy=email.policy.default)),
        )
        with self._owner._changed:
            self._owner.messages.append(received)
            number = len(self._owner.messages)
            self._owner._changed.notify_all()
        return f"250 2.0.0 Ok: queued as M{number}"


class _Controller(Controller):
    def __init__(self, owner: RecordingSMTPServer, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), **kwargs)
        self._owner = owner

    def factory(self) -> SMTP:
        return _RecordingSMTP(self._owner, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # port 0 asks the OS for a free port: learn which before aiosmtpd pokes at it
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        super()._trigger_server()


class RecordingSMTPServer:
    """Usage: `with RecordingSMTPServer() as smtp: ...; smtp.wait_for(1)`; see `url`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pipelining: bool = False,
        auth: tuple[str, str] | None = None,
        tls: Literal["starttls", "implicit"] | None = None,
        responses: Callable[[str], str | None] | None = None,
        respond_at: Literal["rcpt", "data"] = "rcpt",
    ) -> None:
        self.host = host
        self.port = port
        self.pipelining = pipelining
        self.auth = auth
        self.tls = tls
        self.responses = responses  # rcpt -> "550 5.1.1 User unknown" / "451 4.3.0 ..." / DROP / None
        self.respond_at = respond_at
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._controller: _Controller | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        user = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        options = "?verify=false" if self.tls else ""
        if self.tls == "starttls":
            options += "&starttls=true"
        return f"{scheme}://{user}{self.host}:{self.port}{options}"

    def start(self) -> RecordingSMTPServer:
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port, "ready_timeout": 5.0}
        if self.tls:
            self._tempdir = tempfile.TemporaryDirectory(prefix="smtp-tls-")
            context = self_signed_context(Path(self._tempdir.name))
            if self.tls == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            else:
                kwargs["ssl_context"] = context
        if self.auth:
            user, password = self.auth

            def authenticate(server: Any, session: Any, envelope: Any, mech: str, data: Any) -> AuthResult:
                ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                    user.encode(),
                    password.encode(),
                )
                return AuthResult(success=ok, handled=False)  # let aiosmtpd answer 235 or 535

            # requiring AUTH without TLS makes aiosmtpd warn; tests use auth together with TLS
            # aiosmtpd 1.4's LOGIN crashes on a rejected password; smtplib falls back to it after PLAIN
            kwargs.update(
                authenticator=authenticate,
                auth_required=bool(self.tls),
                auth_require_tls=bool(self.tls),
                auth_exclude_mechanism=["LOGIN"],
            )
        self._controller = _Controller(self, **kwargs)
        self._controller.start()
        self.port = self._controller.port
        with self._lock:
            self.connections = 0  # aiosmtpd's own start-up probe does not count
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> RecordingSMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.connections = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until `count` messages arrived; AssertionError with what did arrive on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} messages, got {len(self.messages)}")
                self._changed.wait(left)
            return list(self.messages)
