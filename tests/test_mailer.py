"""The mail transports against a real SMTP server (aiosmtpd), plus URL parsing and classification."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.mailer import (
    MemoryMailer,
    OutboxMailer,
    SendResult,
    SMTPMailer,
    WireBytes,
    classify,
    get_mailer,
    parse_smtp_urls,
)
from newsletter.messages import CampaignMessage, Recipient
from tests.smtpserver import DROP, RecordingSMTPServer

FROM = "bounces@news.example.org"


def message(n: int) -> bytes:
    return (
        f"From: News <news@example.org>\r\nTo: r{n}@example.com\r\nSubject: Issue {n}\r\n"
        f"Message-ID: <{n}@news.example.org>\r\n\r\n"
        ".a line starting with a dot\r\n..two dots\r\nplain line\r\n."
    ).encode()


def batch(count: int, start: int = 0) -> list[tuple[str, str, bytes]]:
    return [(FROM, f"r{n}@example.com", message(n)) for n in range(start, start + count)]


@pytest.fixture(params=[False, True], ids=["no-pipelining", "pipelining"])
def smtp(request: pytest.FixtureRequest) -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer(pipelining=request.param) as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_one_connection_carries_a_whole_batch(smtp: RecordingSMTPServer) -> None:
    with SMTPMailer(smtp.url).session() as session:
        results = list(session.send_many(batch(30)))
    assert [r.code for r in results] == [250] * 30 and all(r.ok for r in results)
    received = smtp.wait_for(30)
    assert smtp.connections == 1
    assert [m.rcpt_tos for m in received] == [(f"r{n}@example.com",) for n in range(30)]
    assert received[0].envelope_from == FROM
    # dot-stuffing undone by the server, the missing final CRLF added
    assert received[3].data == message(3) + b"\r\n"
    assert received[3].message["Subject"] == "Issue 3"


def test_composed_messages_go_out_unstuffed_and_arrive_as_composed(smtp: RecordingSMTPServer) -> None:
    # the composer writes a leading dot as =2E, so its output is sent as is, with no stuffing pass
    composed = CampaignMessage(
        subject="Dots", from_email="news@example.org", from_name=None, list_id="<weekly.example.org>",
        html="<style>\n.a { color: red }\n</style>\n.%%NAME%%", text=".one\n..two\n%%NAME%%\n",
    )  # fmt: skip
    data = composed.render(
        Recipient(email="r1@example.com", name=".dotted", message_id="<1@example.org>",
                  values={}, unsubscribe_url="https://news.example.org/u/1")
    )  # fmt: skip
    with SMTPMailer(smtp.url).session() as session:
        [result] = session.send_many([(FROM, "r1@example.com", WireBytes(data))])
    assert result.ok
    [received] = smtp.wait_for(1)
    assert received.data == data
    assert received.message.get_body(("plain",)).get_content() == ".one\r\n..two\r\n.dotted\r\n"


def test_results_per_recipient_with_injected_failures(smtp: RecordingSMTPServer) -> None:
    faults = {
        "r2@example.com": "550 5.1.1 User unknown",
        "r5@example.com": "451 4.3.0 Try later",
        "r6@example.com": "552 5.2.2 Mailbox full",
    }
    smtp.responses = faults.get
    with SMTPMailer(smtp.url).session() as session:
        results = list(session.send_many(batch(8)))
        again = session.send(FROM, "r9@example.com", message(9))
    assert [r.code for r in results] == [250, 250, 550, 250, 250, 451, 552, 250]
    assert results[2].text.startswith("5.1.1") and results[2].permanent
    assert [classify(r) for r in results[2:7]] == ["failed", "sent", "sent", "retry", "retry"]
    assert again.ok
    assert len(smtp.wait_for(6)) == 6 and smtp.connections == 1


def test_failures_at_data_time(smtp: RecordingSMTPServer) -> None:
    smtp.respond_at = "data"
    smtp.responses = {"r1@example.com": "554 5.7.1 Rejected as spam"}.get
    with SMTPMailer(smtp.url).session() as session:
        results = list(session.send_many(batch(3)))
    assert [r.code for r in results] == [250, 554, 250]
    assert len(smtp.wait_for(2)) == 2


def test_dropped_connection_is_never_reported_as_sent(smtp: RecordingSMTPServer) -> None:
    smtp.respond_at = "data"
    smtp.responses = {"r1@example.com": DROP}.get
    with SMTPMailer(smtp.url).session() as session:
        results = list(session.send_many(batch(4)))
    assert [r.code for r in results] == [250, 0, 250, 250]
    assert "connection lost" in results[1].text
    assert [m.rcpt_tos[0] for m in smtp.wait_for(3)] == ["r0@example.com", "r2@example.com", "r3@example.com"]
    assert smtp.connections == 2  # reconnected once for the rest of the batch


def test_421_throttles_the_server_and_the_batch_goes_on(smtp: RecordingSMTPServer) -> None:
    too_fast = "421 4.7.0 Too many messages, slow down"
    smtp.responses = {"r1@example.com": too_fast, "r2@example.com": too_fast}.get
    mailer = SMTPMailer(smtp.url)
    with mailer.session() as session:
        results = list(session.send_many(batch(4)))
    assert [r.code for r in results] == [250, 421, 421, 250]
    assert results[1].throttled and classify(results[1]) == "retry"
    [pace] = mailer.pacer.snapshot()  # two 421s in three replies: the server's pace is cut
    assert pace.server == mailer.servers[0].display and pace.rate is not None
    assert pace.reason == "421 4.7.0 Too many messages, slow down" and pace.changed_at is not None
    assert mailer.pacer.slowed(pace.server)
    assert SendResult(451, "4.7.1 rate limited").throttled
    assert SendResult(421, "too many connections from your IP").throttled
    assert SendResult(450, "4.2.1 try again later").throttled
    assert not SendResult(451, "4.3.0 later").throttled
    assert not SendResult(452, "4.3.1 Insufficient system storage").throttled
    assert not SendResult(452, "4.2.2 Mailbox full").throttled


def test_local_problems_at_the_server_defer_the_recipient_but_do_not_slow_the_server(
    smtp: RecordingSMTPServer,
) -> None:
    smtp.responses = {
        "r1@example.com": "451 4.3.0 Temporary lookup failure",
        "r2@example.com": "452 4.3.1 Insufficient system storage",
        "r3@example.com": "452 4.2.2 Mailbox full",
    }.get
    mailer = SMTPMailer(smtp.url)
    with mailer.session() as session:
        results = list(session.send_many(batch(5)))
    assert [r.code for r in results] == [250, 451, 452, 452, 250]
    assert [classify(r) for r in results] == ["sent", "retry", "retry", "retry", "sent"]
    assert [p.rate for p in mailer.pacer.snapshot()] == [None]  # still unlimited
    assert not mailer.pacer.slowed(mailer.servers[0].display)
    assert len(smtp.wait_for(2)) == 2 and smtp.connections == 1


def test_starttls_and_auth() -> None:
    with RecordingSMTPServer(tls="starttls", auth=("user", "s3cret,pass"), pipelining=True) as server:
        url = server.url.replace("s3cret,pass", "s3cret%2Cpass") + "&timeout=3"
        with SMTPMailer(url).session() as session:
            assert [r.code for r in session.send_many(batch(2))] == [250, 250]
        assert len(server.wait_for(2)) == 2
        wrong = url.replace("s3cret%2Cpass", "wrong")
        with SMTPMailer(wrong).session() as session:
            result = session.send(FROM, "r0@example.com", message(0))
        assert result.code == 0 and "535" in result.text


def test_implicit_tls() -> None:
    with RecordingSMTPServer(tls="implicit") as server:
        assert server.url.startswith("smtps://")
        with SMTPMailer(server.url).session() as session:
            assert session.send(FROM, "r0@example.com", message(0)).ok
        server.wait_for(1)


@pytest.mark.serial
def test_server_down_gives_quick_code_0_errors() -> None:
    mailer = SMTPMailer(f"smtp://127.0.0.1:{free_port()}?timeout=2")
    started = time.monotonic()
    with mailer.session() as session:
        results = list(session.send_many(batch(50)))
    assert time.monotonic() - started < 2
    assert all(r.code == 0 and classify(r) == "retry" for r in results)
    assert "no SMTP server reachable" in results[0].text


def test_pool_fails_over_to_the_next_server() -> None:
    with RecordingSMTPServer() as server:
        mailer = SMTPMailer(f"smtp://127.0.0.1:{free_port()},{server.url}")
        for _ in range(2):  # whichever the rotation tries first, the live one gets the mail
            with mailer.session() as session:
                assert all(r.ok for r in session.send_many(batch(3)))
        assert len(server.wait_for(6)) == 6


@pytest.mark.serial
def test_rate_limit_paces_messages(smtp: RecordingSMTPServer) -> None:
    started = time.monotonic()
    with SMTPMailer(smtp.url + "?rate=50").session() as session:
        assert all(r.ok for r in session.send_many(batch(6)))
    assert time.monotonic() - started >= 5 / 50


def test_envelope_injection_is_refused(smtp: RecordingSMTPServer) -> None:
    with SMTPMailer(smtp.url).session() as session:
        result = session.send(FROM, "a@example.com>\r\nRCPT TO:<b@example.com", message(0))
        assert result.code == 501 and classify(result) == "failed"
        assert session.send(FROM, "ok@example.com", message(0)).ok


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host", "scheme must be smtp:// or smtps://"),
        ("smtp://", "no host name"),
        ("smtp://host:99999", "Port out of range"),
        ("smtp://host:abc", "Port could not be cast"),
        ("smtp://host?bogus=1", "unknown option 'bogus'"),
        ("smtp://host?starttls=maybe", "must be true or false"),
        ("smtp://host?max_connections=0", "must be a positive number"),
        ("smtp://host?rate=fast", "must be a positive number"),
        ("smtp://host?pipelining=always", "pipelining must be auto or off"),
        ("smtps://host?starttls=true", "already TLS"),
        ("", "empty"),
    ],
)
def test_malformed_urls_explain_themselves(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_smtp_urls(url)


def test_url_errors_never_echo_the_password() -> None:
    with pytest.raises(ValueError) as error:
        parse_smtp_urls("smtp://user:hunter2@host?nope=1")
    assert "hunter2" not in str(error.value)


def test_parse_urls() -> None:
    first, second = parse_smtp_urls(
        "smtp://us%40er:p%2Cw@mail.example.org:587?starttls=true&max_connections=8&rate=20"
        "&timeout=5&pipelining=off&verify=false, smtps://[::1]"
    )
    assert (first.host, first.port, first.username, first.password) == ("mail.example.org", 587, "us@er", "p,w")
    assert first.starttls and not first.verify and not first.pipelining
    assert (first.max_connections, first.rate, first.timeout) == (8, 20.0, 5.0)
    assert (second.host, second.port, second.implicit_tls) == ("::1", 465, True)
    assert "p,w" not in repr(first) and first.display == "smtp://us@er@mail.example.org:587"


def test_outbox_writes_parseable_files(tmp_path: Path) -> None:
    mailer = get_mailer(None, tmp_path / "outbox")
    assert isinstance(mailer, OutboxMailer)
    with mailer.session() as session:
        results = list(session.send_many(batch(3)))
        session.send(FROM, "r0@example.com", message(0))  # a resend never overwrites
    assert all(r.ok for r in results)
    files = sorted((tmp_path / "outbox").iterdir())
    assert len(files) == 4 and all(f.suffix == ".eml" for f in files)
    parsed = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert [p["Subject"] for p in parsed] == ["Issue 0", "Issue 1", "Issue 2", "Issue 0"]
    assert isinstance(get_mailer("smtp://localhost", tmp_path), SMTPMailer)


def test_memory_mailer_records_and_fails_on_request() -> None:
    mailer = MemoryMailer(responses={"r1@example.com": SendResult(550, "5.1.1 User unknown")})
    with mailer.session() as session:
        results = list(session.send_many(batch(3)))
    assert [r.code for r in results] == [250, 550, 250]
    assert [m.recipient for m in mailer.sent] == ["r0@example.com", "r2@example.com"]


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (250, "2.0.0 Ok: queued as X", "sent"),
        (0, "connection refused", "retry"),
        (421, "4.7.0 slow down", "retry"),
        (450, "4.2.1 mailbox busy", "retry"),
        (451, "4.3.0 try later", "retry"),
        (550, "5.1.1 User unknown", "failed"),
        (554, "5.7.1 spam", "failed"),
        (552, "5.3.4 message too big", "retry"),
        (550, "5.2.2 Mailbox full", "retry"),
        (553, "5.1.3 bad address", "failed"),
    ],
)
def test_classify(code: int, text: str, outcome: str) -> None:
    assert classify(SendResult(code, text)) == outcome


def test_abandoning_a_pipelined_batch_leaves_the_session_usable() -> None:
    with RecordingSMTPServer(pipelining=True) as server:
        with SMTPMailer(server.url + "?timeout=3").session() as session:
            results = session.send_many(batch(5))
            assert next(results).ok
            results.close()  # type: ignore[attr-defined]
            started = time.monotonic()
            assert session.send(FROM, "r9@example.com", message(9)).ok
        assert time.monotonic() - started < 2
        assert [m.rcpt_tos[0] for m in server.wait_for(2)] == ["r0@example.com", "r9@example.com"]


def test_after_a_421_the_session_keeps_a_warm_spare_and_leaves_nothing_open(smtp: RecordingSMTPServer) -> None:
    """A server that hung up with a 421 will again: the next connection is opened while the batch goes on."""
    too_fast = "421 4.7.0 Too many messages, slow down"
    smtp.responses = {f"r{i}@example.com": too_fast for i in (2, 5, 8)}.get
    mailer = SMTPMailer(smtp.url + "?max_connections=2")
    with mailer.session() as session:
        results = list(session.send_many(batch(10)))
        [state] = mailer._states
        assert session._spare is not None  # one spare kept warm after the last 421
    assert [r.code for r in results] == [250, 250, 421, 250, 250, 421, 250, 250, 421, 250]
    assert [m.rcpt_tos[0] for m in smtp.wait_for(7)] == [f"r{i}@example.com" for i in (0, 1, 3, 4, 6, 7, 9)]
    # the first connection, a spare after each 421 (each taken at once), and the one left, closed at the end
    assert smtp.connections == 5
    # every connection slot is free again: the spare's too
    assert all(state.slots.acquire(blocking=False) for _ in range(2)) and state.active == 0
