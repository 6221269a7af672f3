"""/admin/settings: the SMTP "test connection" against aiosmtpd (with and without AUTH, a closed port),
the DKIM record and what DNS says (a local DNS server, and none), the queue, schedulers, version."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select

from newsletter import health
from newsletter.models import AuditEntry, Heartbeat, Role
from tests.admin import AdminWeb, csrf_from
from tests.smtpserver import RecordingSMTPServer

# The page reads settings and two small tables: one backend is enough (the audit rows it writes are tested on both).
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_settings(web: AdminWeb, **changes: object) -> None:
    web.app.state.settings = web.settings.model_copy(update=changes)


def test_connection_steps_with_and_without_auth_and_a_closed_port(admin_web: AdminWeb) -> None:
    with (
        RecordingSMTPServer(tls="starttls", auth=("sender", "right-pass")) as secured,
        RecordingSMTPServer(tls="starttls", auth=("sender", "wrong-pass")) as refusing,
        RecordingSMTPServer() as plain,
    ):
        wrong = refusing.url.replace("wrong-pass", "not-the-pass")
        pool = ",".join([secured.url, wrong, plain.url, f"smtp://127.0.0.1:{closed_port()}"])
        with_settings(admin_web, smtp_url=pool)
        boss = admin_web.signed_in(Role.admin, name="boss")
        page = boss.get("/admin/settings")
        assert page.status_code == 200 and "right-pass" not in page.text and "not-the-pass" not in page.text
        assert f"smtp://sender@127.0.0.1:{secured.port}" in page.text and "STARTTLS · signs in as sender" in page.text
        token = csrf_from(page.text)
        steps = {}
        for index in range(4):
            answer = boss.post(f"/admin/settings/smtp/{index}/test", data={"csrf_token": token})
            assert answer.status_code == 200 and "right-pass" not in answer.text
            steps[index] = re.findall(
                r"<tr><td>([^<]+)</td><td>(ok|failed)</td><td><code class=\"reply\">([^<]*)</code>", answer.text
            )
        assert [(name, result) for name, result, _ in steps[0]] == [
            ("connect", "ok"), ("EHLO", "ok"), ("STARTTLS", "ok"), ("EHLO after STARTTLS", "ok"), ("AUTH", "ok"),
        ]  # fmt: skip
        assert steps[0][0][2].startswith("220 ") and steps[0][4][2].startswith("235 ")
        assert steps[1][-1][:2] == ("AUTH", "failed") and steps[1][-1][2].startswith("535 ")
        assert [(name, result) for name, result, _ in steps[2]] == [("connect", "ok"), ("EHLO", "ok")]
        assert steps[3][0][:2] == ("connect", "failed") and "refused" in steps[3][0][2].lower()
        assert secured.messages == plain.messages == []  # a test sends nothing
    with admin_web.sessions() as session:
        checks = session.scalars(select(AuditEntry).where(AuditEntry.action == "settings.smtp_test")).all()
        assert [e.details["ok"] for e in checks] == [True, False, True, False]


def test_test_connection_needs_the_csrf_token(admin_web: AdminWeb) -> None:
    with RecordingSMTPServer() as plain:
        with_settings(admin_web, smtp_url=plain.url)
        boss = admin_web.signed_in(Role.admin, name="boss")
        assert boss.post("/admin/settings/smtp/0/test").status_code == 403
        assert plain.connections == 0
    with admin_web.sessions() as session:
        assert (
            session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action != "sign_in.ok")) == 0
        )


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "dkim.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import base64

    return path, f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


class TxtServer:
    """A one-record DNS server on a local UDP port (dnspython builds and parses the messages)."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.socket.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            name = query.question[0].name.to_text().rstrip(".")
            if name in self.records:
                response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "TXT", f'"{self.records[name]}"'))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.socket.sendto(response.to_wire(), peer)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        return resolver

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def dns_server() -> Iterator[TxtServer]:
    server = TxtServer({})
    yield server
    server.close()


def test_dkim_record_derived_from_the_key_and_checked_in_dns(
    admin_web: AdminWeb, dkim_key: tuple[Path, str], dns_server: TxtServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = dkim_key
    settings = admin_web.settings.model_copy(
        update={"dkim_domain": "example.org", "dkim_selector": "news", "dkim_key_file": path}
    )
    record = health.dkim_record(settings, resolver=dns_server.resolver())
    assert record is not None and record.value == expected and record.name == "news._domainkey.example.org"
    assert record.published is False and "DNS has no record at news._domainkey.example.org" in record.dns
    dns_server.records["news._domainkey.example.org"] = expected
    assert health.dkim_record(settings, resolver=dns_server.resolver()).published is True  # type: ignore[union-attr]
    dns_server.records["news._domainkey.example.org"] = "v=DKIM1; k=ed25519; p=c29tZW9uZSBlbHNl"
    other = health.dkim_record(settings, resolver=dns_server.resolver())
    assert other is not None and other.published is False and "DNS serves another key" in other.dns
    # No DNS at all (this machine has no network): the page says it cannot check, and still shows the record.
    unreachable = dns.resolver.Resolver(configure=False)
    unreachable.nameservers, unreachable.port = ["127.0.0.1"], closed_port()
    monkeypatch.setattr(dns.resolver, "Resolver", lambda: unreachable)
    with_settings(admin_web, dkim_domain="example.org", dkim_selector="news", dkim_key_file=path)
    page = admin_web.signed_in(Role.admin, name="boss").get("/admin/settings").text
    assert expected in page and "news._domainkey.example.org" in page
    assert "not checked" in page and "cannot check: DNS is unreachable from this server" in page


def test_services_queue_schedulers_and_version(admin_web: AdminWeb, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush("celery", "a", "b", "c")
    client.close()
    with admin_web.sessions.begin() as session:
        now = dt.datetime.now(dt.UTC)
        session.add(Heartbeat(name="beat", holder="worker-1:41", seen_at=now - dt.timedelta(minutes=1)))
        session.add(Heartbeat(name="embedded", holder="web-1:7", seen_at=now - dt.timedelta(hours=3)))
    with_settings(admin_web, broker_url=redis_url)
    page = admin_web.signed_in(Role.admin, name="boss").get("/admin/settings").text
    assert "Queue “celery”</dt><dd>3 task(s) waiting" in page and "Redis answers" in page
    assert re.search(r"Celery beat</td><td>worker-1:41</td>\s*<td>[^<]+<span class=\"status status-ok\">recent", page)
    assert re.search(
        r"newsletter serve</td><td>web-1:7</td>\s*<td>[^<]+<span class=\"status status-error\">stale", page
    )
    assert f"newsletter {health.version()}" in page and "schema revision 0018" in page  # the head, as in test_models
    with_settings(admin_web, broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    down = admin_web.signed_in(Role.admin, name="boss").get("/admin/settings").text
    assert "Redis does not answer" in down and "failing" in down
