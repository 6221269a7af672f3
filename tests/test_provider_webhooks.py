"""Provider webhooks (SES via SNS, SendGrid, Postmark, Mailgun) through the real app on both backends:
each provider's real payload format, signed with keys made here; a signed bounce and complaint suppress
the right address and fail the right row, and every request that is not provably the provider's is a
4xx that changes nothing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import ConfigError, Settings
from newsletter.db import unit_of_work
from newsletter.delivery.composing import MessageMacs
from newsletter.models import Delivery, DeliveryStatus, Suppression
from newsletter.providers import inbox
from newsletter.web.app import create_app
from tests.snsserver import CERT_URL, REGION, STRANGER_CERT_URL, TOPIC, FakeSns, ses_bounce, ses_complaint
from tests.test_bounces import send_sample, state

POSTMARK_AUTH = "postmark:s3cret-webhook-password"


@pytest.fixture(scope="module")
def sns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSns]:
    server = FakeSns(tmp_path_factory.mktemp("sns"))
    yield server
    server.stop()


@pytest.fixture
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hook_settings(
    make_settings: Callable[..., Settings], engine: Engine, sns: FakeSns, sendgrid_key: ec.EllipticCurvePrivateKey
) -> Settings:
    public = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        ses_topic_arns=f"{TOPIC},arn:aws:sns:us-east-1:123456789012:other",
        sns_certificate_mirror=sns.mirror,
        sns_certificate_ca_file=sns.ca_file,
        sendgrid_webhook_public_key=base64.b64encode(public).decode(),
        postmark_webhook_auth=POSTMARK_AUTH,
        mailgun_webhook_signing_key="key-" + "a1" * 16,
    )


def applied(sessions: sessionmaker[Session], settings: Settings) -> list[dict[str, Any]]:
    """The processing step, as the worker runs it after a webhook's 200: what each accepted event did."""
    with unit_of_work(sessions) as session:
        return [done.outcome.as_dict() for done in inbox.process(session, settings)]


@dataclass(frozen=True)
class Posted:
    """A webhook's answer, and what the processing step run right after it did with the accepted events."""

    answer: httpx.Response
    events: list[dict[str, Any]]

    @property
    def status_code(self) -> int:
        return self.answer.status_code

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def headers(self) -> httpx.Headers:
        return self.answer.headers

    def json(self) -> Any:
        return self.answer.json()


@dataclass(frozen=True)
class Hooks:
    """Posts to the app's webhooks; after each 200 the accepted events are applied (`applied`)."""

    client: Hooks
    settings: Settings
    sessions: sessionmaker[Session]

    def post(self, url: str, **options: Any) -> Posted:
        answer = self.client.post(url, **options)
        return Posted(answer, applied(self.sessions, self.settings) if answer.status_code == 200 else [])


@contextmanager
def webhook_client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Hooks]:
    app = create_app(settings)
    app.state.sessions = sessions
    app.state.open_hot_pools = False  # the PostgreSQL fast path would not see this test's rows
    with TestClient(app) as client:
        yield Hooks(client, settings, sessions)


@pytest.fixture
def sent(sessions: sessionmaker[Session], session: Session, hook_settings: Settings) -> dict[str, Delivery]:
    """Four delivered rows, each with the id a provider gave it when it accepted the message."""
    rows = send_sample(sessions, session, hook_settings)
    for address, row in rows.items():
        session.execute(
            update(Delivery).where(Delivery.id == row.id).values(provider_message_id=f"pid-{address.split('@')[0]}")
        )
    session.commit()
    session.expire_all()
    return rows


@pytest.fixture
def client(hook_settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Hooks]:
    with webhook_client(hook_settings, sessions) as test_client:
        yield test_client


def suppressed(session: Session) -> dict[str, str]:
    session.expire_all()
    return {s.email or "": s.reason.value for s in session.scalars(select(Suppression))}


def status_of(session: Session, row: Delivery) -> DeliveryStatus:
    session.expire_all()
    return session.get_one(Delivery, row.id).status


# --- Amazon SES via SNS ------------------------------------------------------------------------------------


def test_ses_signed_bounce_and_complaint_suppress_and_fail_the_rows(
    client: Hooks, session: Session, sns: FakeSns, sent: dict[str, Delivery]
) -> None:
    fetched_before = len(sns.requests)
    # SignatureVersion 1 (SHA1), matched by SES's message id; version 2 (SHA256), by our own Message-ID.
    bounce = sns.envelope(ses_bounce("pid-r1", "r1@example.com"), version="1")
    answer = client.post("/webhooks/ses", content=json.dumps(bounce))
    assert answer.status_code == 200, answer.text
    [outcome] = answer.events
    assert (outcome["result"], outcome["delivery_id"]) == ("suppressed", sent["r1@example.com"].id)
    complaint = sns.envelope(
        ses_complaint("unknown-id", "r2@example.com", sent["r2@example.com"].message_id), version="2"
    )
    answer = client.post("/webhooks/ses", content=json.dumps(complaint))
    assert answer.status_code == 200, answer.text
    assert answer.events[0]["result"] == "suppressed"
    assert suppressed(session) == {"r1@example.com": "hard_bounce", "r2@example.com": "complaint"}
    assert status_of(session, sent["r1@example.com"]) == DeliveryStatus.failed
    assert status_of(session, sent["r0@example.com"]) == DeliveryStatus.sent
    # the certificate was fetched once, from the mirror of its official path, and then cached
    assert sns.requests[fetched_before:] in ([], ["/" + CERT_URL.rsplit("/", 1)[1]])
    assert sns.requests.count("/" + CERT_URL.rsplit("/", 1)[1]) == 1


def _tampered(envelope: dict[str, str]) -> dict[str, str]:
    message = envelope["Message"]
    at = message.index("r1@example.com")
    return envelope | {"Message": message[:at] + "r0" + message[at + 2 :]}  # one byte: r1 -> r0


SES_REFUSALS: dict[str, Callable[[FakeSns, dict[str, Any]], dict[str, str]]] = {
    "one byte changed": lambda sns, m: _tampered(sns.envelope(m)),
    "old timestamp": lambda sns, m: sns.envelope(
        m, timestamp=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1, seconds=5)
    ),
    "wrong key": lambda sns, m: sns.envelope(m, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "certificate on another host": lambda sns, m: sns.envelope(
        m, cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-9c6465fa7f48f5ca.pem"
    ),
    "certificate over http": lambda sns, m: sns.envelope(m, cert_url=CERT_URL.replace("https://", "http://")),
    "a certificate that is not Amazon's": lambda sns, m: sns.envelope(
        m, cert_url=STRANGER_CERT_URL, key=sns.stranger_key
    ),
    "topic not allowed": lambda sns, m: sns.envelope(m, topic="arn:aws:sns:eu-west-1:999999999999:someone-else"),
    "unknown signature version": lambda sns, m: sns.envelope(m, version="2") | {"SignatureVersion": "3"},
}


@pytest.mark.parametrize("case", SES_REFUSALS)
def test_ses_refuses_what_sns_did_not_sign_and_changes_nothing(
    case: str, client: Hooks, session: Session, sns: FakeSns, sent: dict[str, Delivery]
) -> None:
    envelope = SES_REFUSALS[case](sns, ses_bounce("pid-r1", "r1@example.com"))
    before, fetched = state(session), list(sns.requests)
    answer = client.post("/webhooks/ses", content=json.dumps(envelope))
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]
    assert "www-authenticate" not in answer.headers
    if case == "a certificate that is not Amazon's":
        assert "not Amazon's" in answer.json()["error"]  # it chains to a trusted CA, but names another host
    assert state(session) == before
    if case in ("certificate on another host", "certificate over http", "topic not allowed"):
        assert sns.requests == fetched  # no outbound request for an untrusted certificate URL or topic


def test_ses_basic_auth_when_configured(
    hook_settings: Settings, sessions: sessionmaker[Session], session: Session, sns: FakeSns, sent: dict[str, Delivery]
) -> None:
    settings = hook_settings.model_copy(update={"ses_webhook_auth": "sns:hook-password-1"})
    body = json.dumps(sns.envelope(ses_bounce("pid-r1", "r1@example.com")))
    before = state(session)
    with webhook_client(settings, sessions) as client:
        for auth in (None, ("sns", "hook-password-2")):
            answer = client.post("/webhooks/ses", content=body, auth=auth)
            # SNS sends its credentials after a Basic challenge
            assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith('Basic realm="')
        assert state(session) == before
        assert client.post("/webhooks/ses", content=body, auth=("sns", "hook-password-1")).status_code == 200
    assert suppressed(session) == {"r1@example.com": "hard_bounce"}


def test_ses_confirms_a_subscription_only_for_an_allowed_topic(
    client: Hooks, session: Session, sns: FakeSns, sent: dict[str, Delivery]
) -> None:
    before = state(session)
    refused = sns.envelope(kind="SubscriptionConfirmation", topic="arn:aws:sns:eu-west-1:999999999999:stranger")
    count = len(sns.requests)
    assert client.post("/webhooks/ses", content=json.dumps(refused)).status_code == 401
    assert not [path for path in sns.requests[count:] if "ConfirmSubscription" in path]
    elsewhere = sns.envelope(kind="SubscriptionConfirmation")
    elsewhere["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription&Token=x"
    elsewhere = sns.envelope(kind="SubscriptionConfirmation") | {"SubscribeURL": elsewhere["SubscribeURL"]}
    assert client.post("/webhooks/ses", content=json.dumps(elsewhere)).status_code == 401
    assert not [path for path in sns.requests[count:] if "ConfirmSubscription" in path]
    confirmation = sns.envelope(kind="SubscriptionConfirmation")
    answer = client.post("/webhooks/ses", content=json.dumps(confirmation))
    assert answer.status_code == 200, answer.text
    assert answer.json()["confirmed_topic"] == TOPIC
    [confirmed] = [path for path in sns.requests[count:] if "ConfirmSubscription" in path]
    assert confirmed == confirmation["SubscribeURL"].removeprefix(f"https://sns.{REGION}.amazonaws.com")
    assert state(session) == before


def test_ses_soft_bounce_is_recorded_and_keeps_the_address(
    client: Hooks, session: Session, sns: FakeSns, sent: dict[str, Delivery]
) -> None:
    envelope = sns.envelope(ses_bounce("pid-r3", "r3@example.com", permanent=False), version="2")
    answer = client.post("/webhooks/ses", content=json.dumps(envelope))
    assert answer.status_code == 200 and answer.events[0]["result"] == "recorded"
    assert suppressed(session) == {}
    assert status_of(session, sent["r3@example.com"]) == DeliveryStatus.failed


# --- SendGrid ---------------------------------------------------------------------------------------------


def sendgrid_events(sent: dict[str, Delivery]) -> bytes:
    """A batch as SendGrid posts it: a bounce (matched by sg_message_id), a spam report (by smtp-id) and
    events that say nothing about the address."""
    now = int(time.time())
    events = [
        {"email": "r1@example.com", "timestamp": now, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
         "event": "processed", "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A", "sg_message_id": "pid-r1.filter0001"},
        {"email": "r1@example.com", "timestamp": now, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
         "event": "bounce", "category": ["weekly"], "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
         "sg_message_id": "pid-r1.filterdrecv-p3las1-5bf99c48d-k8wtw-18-5C9A1E89-6.0",
         "reason": "550 5.1.1 The email account that you tried to reach does not exist.", "status": "5.1.1",
         "type": "bounce", "bounce_classification": "Invalid Address"},
        {"email": "r2@example.com", "timestamp": now, "smtp-id": sent["r2@example.com"].message_id,
         "event": "spamreport", "sg_event_id": "37nvH5QBz858KGVYCM4uOA", "sg_message_id": "sg-unknown.filter0001"},
        {"email": "r3@example.com", "timestamp": now, "event": "deferred", "attempt": "1",
         "response": "400 try again later", "sg_message_id": "pid-r3.filter0001"},
    ]  # fmt: skip
    return json.dumps(events).encode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def test_sendgrid_signed_bounce_and_spam_report_suppress(
    client: Hooks, session: Session, sendgrid_key: ec.EllipticCurvePrivateKey, sent: dict[str, Delivery]
) -> None:
    body = sendgrid_events(sent)
    answer = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(sendgrid_key, body))
    assert answer.status_code == 200, answer.text
    assert [e["result"] for e in answer.events] == ["suppressed", "suppressed"]
    assert suppressed(session) == {"r1@example.com": "hard_bounce", "r2@example.com": "complaint"}
    assert status_of(session, sent["r1@example.com"]) == DeliveryStatus.failed
    assert status_of(session, sent["r3@example.com"]) == DeliveryStatus.sent


def test_a_delivered_event_confirms_a_row_a_crash_left_unknown(
    client: Hooks, session: Session, sendgrid_key: ec.EllipticCurvePrivateKey, sent: dict[str, Delivery]
) -> None:
    unknown = sent["r0@example.com"]
    session.execute(update(Delivery).where(Delivery.id == unknown.id).values(status=DeliveryStatus.unknown))
    session.commit()
    now = int(time.time())
    body = json.dumps([
        {"email": "r0@example.com", "timestamp": now, "event": "delivered", "sg_message_id": "pid-r0.filter0001",
         "response": "250 2.0.0 OK 1764590400 x1si123 - gsmtp", "smtp-id": "<x@ismtpd-1>"},
        {"email": "r1@example.com", "timestamp": now, "event": "delivered", "sg_message_id": "pid-r1.filter0001"},
    ]).encode()  # fmt: skip
    answer = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(sendgrid_key, body))
    assert answer.status_code == 200, answer.text
    assert [(e["kind"], e["result"]) for e in answer.events] == [
        ("delivered", "recorded"),
        ("delivered", "ignored"),
    ]
    assert status_of(session, unknown) == DeliveryStatus.sent
    assert suppressed(session) == {}


@pytest.mark.parametrize("case", ["one byte changed", "old timestamp", "wrong key", "no signature"])
def test_sendgrid_refuses_what_it_did_not_sign(
    case: str, client: Hooks, session: Session, sendgrid_key: ec.EllipticCurvePrivateKey, sent: dict[str, Delivery]
) -> None:
    body = sendgrid_events(sent)
    headers = sendgrid_headers(sendgrid_key, body)
    if case == "one byte changed":
        body = body.replace(b'"r1@example.com"', b'"r0@example.com"', 1)
    elif case == "old timestamp":
        headers = sendgrid_headers(sendgrid_key, body, at=time.time() - 301)
    elif case == "wrong key":
        headers = sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), body)
    else:
        headers = {"Content-Type": "application/json"}
    before = state(session)
    answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert "www-authenticate" not in answer.headers  # a signature is not a credential to be asked for
    assert state(session) == before


# --- Postmark ---------------------------------------------------------------------------------------------


def postmark_bounce(email: str, message_id: str, kind: str = "HardBounce") -> bytes:
    return json.dumps({
        "RecordType": "Bounce", "MessageStream": "outbound", "ID": secrets.randbelow(2**62), "Type": kind,
        "TypeCode": 1 if kind == "HardBounce" else 4096, "Name": "Hard bounce",
        "Tag": "weekly", "MessageID": message_id, "Metadata": {}, "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email, "From": "news@example.org", "BouncedAt": "2026-12-01T14:00:05.9070259Z",
        "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Issue 42", "Content": "",
    }).encode()  # fmt: skip


def postmark_complaint(email: str, message_id: str) -> bytes:
    return json.dumps({
        "RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": secrets.randbelow(2**62),
        "Type": "SpamComplaint",
        "TypeCode": 512, "Name": "Spam complaint", "Tag": "weekly", "MessageID": message_id, "ServerID": 23,
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details",
        "Email": email, "From": "news@example.org", "BouncedAt": "2026-12-01T14:06:00Z", "Subject": "Issue 42",
    }).encode()  # fmt: skip


def test_postmark_bounce_and_complaint_with_basic_auth_suppress(
    client: Hooks, session: Session, sent: dict[str, Delivery]
) -> None:
    user, password = POSTMARK_AUTH.split(":")
    for body in (postmark_bounce("r1@example.com", "pid-r1"), postmark_complaint("r2@example.com", "pid-r2")):
        answer = client.post("/webhooks/postmark", content=body, auth=(user, password))
        assert answer.status_code == 200, answer.text
        assert answer.events[0]["result"] == "suppressed"
    assert suppressed(session) == {"r1@example.com": "hard_bounce", "r2@example.com": "complaint"}
    assert status_of(session, sent["r1@example.com"]) == DeliveryStatus.failed


@pytest.mark.parametrize("auth", [None, ("postmark", "s3cret-webhook-passworD"), ("other", "s3cret-webhook-password")])
def test_postmark_refuses_wrong_credentials(
    auth: tuple[str, str] | None, client: Hooks, session: Session, sent: dict[str, Delivery]
) -> None:
    before = state(session)
    answer = client.post("/webhooks/postmark", content=postmark_bounce("r1@example.com", "pid-r1"), auth=auth)
    assert answer.status_code == 401
    # Postmark authenticates with basic auth only: the challenge asks for that, never for a bearer token
    assert answer.headers["www-authenticate"].startswith('Basic realm="')
    assert state(session) == before


# --- Mailgun ----------------------------------------------------------------------------------------------


def mailgun_body(key: str, event: dict[str, Any], *, at: float | None = None, token: str | None = None) -> bytes:
    timestamp = str(int(at if at is not None else time.time()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event}
    ).encode()


def mailgun_event(name: str, recipient: str, message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": secrets.token_urlsafe(16), "timestamp": time.time(), "log-level": "error", "event": name,
        "recipient": recipient, "recipient-domain": "example.com", "tags": ["weekly"], "user-variables": {},
        "message": {"headers": {"to": recipient, "message-id": message_id, "from": "news@example.org",
                                "subject": "Issue 42"}, "attachments": [], "size": 31337},
        **extra,
    }  # fmt: skip


def mailgun_failure(recipient: str, message_id: str) -> dict[str, Any]:
    return mailgun_event(
        "failed", recipient, message_id, severity="permanent", reason="bounce",
        **{"delivery-status": {"attempt-no": 1, "code": 550, "enhanced-code": "5.1.1",
                               "message": "5.1.1 The email account that you tried to reach does not exist.",
                               "description": "", "session-seconds": 0.11}},
    )  # fmt: skip


@pytest.fixture(params=["database", "redis"])
def mailgun_client(
    request: pytest.FixtureRequest, hook_settings: Settings, sessions: sessionmaker[Session]
) -> Iterator[tuple[Hooks, str]]:
    """The replay memory in the database (no Redis configured) or in Redis."""
    settings = hook_settings
    if request.param == "redis":
        settings = hook_settings.model_copy(update={"redis_url": request.getfixturevalue("redis_url")})
    with webhook_client(settings, sessions) as client:
        yield client, settings.mailgun_webhook_signing_key or ""


def test_mailgun_signed_failure_and_complaint_suppress_and_a_replay_is_refused(
    mailgun_client: tuple[Hooks, str], session: Session, sent: dict[str, Delivery]
) -> None:
    client, key = mailgun_client
    # Mailgun passes the Message-ID header on without its angle brackets.
    failure = mailgun_body(
        key, mailgun_failure("r1@example.com", (sent["r1@example.com"].message_id or "").strip("<>"))
    )
    answer = client.post("/webhooks/mailgun", content=failure)
    assert answer.status_code == 200, answer.text
    assert answer.events[0]["result"] == "suppressed"
    complaint = mailgun_body(
        key, mailgun_event("complained", "r2@example.com", (sent["r2@example.com"].message_id or "")[1:-1])
    )
    assert client.post("/webhooks/mailgun", content=complaint).status_code == 200
    assert suppressed(session) == {"r1@example.com": "hard_bounce", "r2@example.com": "complaint"}
    before = state(session)
    replay = client.post("/webhooks/mailgun", content=failure)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]
    assert state(session) == before


@pytest.mark.parametrize("case", ["one byte changed", "old timestamp", "wrong key", "no signature"])
def test_mailgun_refuses_what_it_did_not_sign(
    case: str, mailgun_client: tuple[Hooks, str], session: Session, sent: dict[str, Delivery]
) -> None:
    client, key = mailgun_client
    event = mailgun_failure("r1@example.com", (sent["r1@example.com"].message_id or "")[1:-1])
    body = mailgun_body(key, event)
    if case == "one byte changed":  # Mailgun signs the timestamp and token: change a byte of the token
        payload = json.loads(body)
        token = payload["signature"]["token"]
        payload["signature"]["token"] = ("0" if token[0] != "0" else "1") + token[1:]
        body = json.dumps(payload).encode()
    elif case == "old timestamp":
        body = mailgun_body(key, event, at=time.time() - 301)
    elif case == "wrong key":
        body = mailgun_body("key-" + "b2" * 16, event)
    else:
        body = json.dumps({"event-data": event}).encode()
    before = state(session)
    answer = client.post("/webhooks/mailgun", content=body)
    assert answer.status_code == 401, answer.text
    assert "www-authenticate" not in answer.headers
    assert state(session) == before


# --- every provider ---------------------------------------------------------------------------------------


def test_a_bounce_for_another_installations_message_changes_nothing(
    client: Hooks, session: Session, sns: FakeSns, sent: dict[str, Delivery]
) -> None:
    row = sent["r1@example.com"]
    # The same campaign and row numbers, under another publication's key: its MAC does not verify here.
    mac = MessageMacs("another-publication-secret-key")(row.campaign_id, row.id)
    foreign = f"<{row.campaign_id}.{row.id}.{mac}@example.net>"
    before = state(session)
    for message in (ses_bounce("pid-of-someone-else", "r1@example.com", message_id=foreign),
                    ses_complaint("pid-of-someone-else", "r1@example.com", message_id=foreign)):  # fmt: skip
        answer = client.post("/webhooks/ses", content=json.dumps(sns.envelope(message)))
        assert answer.status_code == 200, answer.text
        assert answer.events[0]["result"] == "ignored"
    assert state(session) == before


def test_a_bounce_naming_another_address_than_the_rows_recipient_changes_nothing(
    client: Hooks, session: Session, sent: dict[str, Delivery]
) -> None:
    before = state(session)
    answer = client.post(
        "/webhooks/postmark", content=postmark_bounce("r0@example.com", "pid-r1"), auth=tuple(POSTMARK_AUTH.split(":"))
    )
    assert answer.status_code == 200 and answer.events[0]["result"] == "ignored"
    assert state(session) == before


@pytest.mark.parametrize("provider", ["ses", "sendgrid", "postmark", "mailgun"])
def test_webhooks_are_off_until_configured_and_bodies_are_capped(
    provider: str, make_settings: Callable[..., Settings], engine: Engine, sessions: sessionmaker[Session],
    hook_settings: Settings,
) -> None:  # fmt: skip
    plain = make_settings(database_url=engine.url.render_as_string(hide_password=False))
    with webhook_client(plain, sessions) as client:
        answer = client.post(f"/webhooks/{provider}", content=b"{}", auth=("a", "b"))
        assert answer.status_code == 404 and "not enabled" in answer.json()["error"]
    with webhook_client(hook_settings, sessions) as client:
        answer = client.post(f"/webhooks/{provider}", content=b"[" + b" " * hook_settings.max_webhook_body_bytes + b"]")
        assert answer.status_code == 413


def test_webhook_settings_are_checked(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ses_topic_arns=" arn:aws:sns:eu-west-1:1:a , arn:aws:sns:eu-west-1:1:b ")
    assert settings.ses_topic_arns == ("arn:aws:sns:eu-west-1:1:a", "arn:aws:sns:eu-west-1:1:b")
    for bad in ({"postmark_webhook_auth": "no-colon"}, {"ses_webhook_auth": "user:"}):
        with pytest.raises(ConfigError, match="USER:PASSWORD"):
            make_settings(**bad)
    with pytest.raises(ConfigError, match="for tests only"):
        make_settings(sns_certificate_mirror="http://localhost:1")
    with pytest.raises(ConfigError, match="for tests only"):
        make_settings(sns_certificate_mirror="https://localhost:1", environment="production", secret_key="k" * 32)
