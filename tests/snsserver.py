"""A stand-in for Amazon SNS's certificate host: a test CA, an SNS-like signing certificate it issued,
and a local HTTPS server (its certificate from the same CA) that serves the signing certificate at any
`SimpleNotificationService-*.pem` path and answers subscription confirmations, recording every request;
and SES's bounce and complaint notifications as SNS carries them. Used by the tests and by bench.webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.providers.ses import signed_text

REGION = "eu-west-1"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
STRANGER_CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-00000000000000000000000000000bad.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey, *, ca: bool = False
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if subject == "localhost":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class FakeSns:
    def __init__(self, directory: Path) -> None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _issue("Test Root CA", ca_key, _name("Test Root CA"), ca_key, ca=True)
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_pem = _pem(_issue("sns.amazonaws.com", self.signing_key, ca.subject, ca_key))
        # served at STRANGER_CERT_URL's path: a valid certificate of the same CA, but not Amazon's
        self.stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stranger_pem = _pem(_issue("sns.attacker.example", self.stranger_key, ca.subject, ca_key))
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca_file = directory / "test-ca.pem"
        self.ca_file.write_bytes(_pem(ca))
        (directory / "server.pem").write_bytes(_pem(_issue("localhost", server_key, ca.subject, ca_key)))
        (directory / "server.key").write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.path == "/" + STRANGER_CERT_URL.rsplit("/", 1)[1]:
                    body, kind = owner.stranger_pem, "application/x-pem-file"
                elif self.path.startswith("/SimpleNotificationService-") and self.path.endswith(".pem"):
                    body, kind = owner.signing_pem, "application/x-pem-file"
                elif self.path.startswith("/?Action=ConfirmSubscription"):
                    body, kind = b"<ConfirmSubscriptionResponse/>", "text/xml"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def mirror(self) -> str:
        return f"https://localhost:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def envelope(
        self,
        message: dict[str, Any] | None = None,
        *,
        kind: str = "Notification",
        topic: str = TOPIC,
        version: str = "1",
        cert_url: str = CERT_URL,
        timestamp: dt.datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
        message_id: str | None = None,
    ) -> dict[str, str]:
        """An SNS message as SNS posts it, signed (SignatureVersion 1: SHA1, 2: SHA256)."""
        moment = timestamp or dt.datetime.now(dt.UTC)
        envelope = {
            "Type": kind,
            "MessageId": message_id or str(uuid.uuid4()),  # SNS's own, the same on its retries
            "TopicArn": topic,
            "Message": json.dumps(message) if message is not None else "You have chosen to subscribe to the topic.",
            "Timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "SignatureVersion": version,
            "SigningCertURL": cert_url,
        }
        if kind == "Notification":
            envelope["Subject"] = "Amazon SES Email Event Notification"
            envelope["UnsubscribeURL"] = (
                f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:1"
            )
        else:
            envelope["Token"] = "2336412f37fb687f5d51e6e2425c464de257d31a4fa1d3a2d1e51a2a1bd"
            envelope["SubscribeURL"] = (
                f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token={envelope['Token']}"
            )
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS's version 1 is SHA1
        signature = (key or self.signing_key).sign(signed_text(envelope), padding.PKCS1v15(), algorithm)
        envelope["Signature"] = base64.b64encode(signature).decode()
        return envelope


# --- SES's notifications (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html) ----------


def ses_mail(provider_id: str, to: str, message_id: str | None = None) -> dict[str, Any]:
    """SES's `mail` object; SES names the message by its own id (and its own Message-ID, by default)."""
    header_id = message_id or f"<{provider_id}@eu-west-1.amazonses.com>"
    return {
        "timestamp": "2026-12-01T13:59:58.000Z",
        "source": "The Weekly <news@example.org>",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.org",
        "sourceIp": "203.0.113.7",
        "sendingAccountId": "123456789012",
        "messageId": provider_id,
        "destination": [to],
        "headersTruncated": False,
        "headers": [{"name": "Message-ID", "value": header_id}, {"name": "To", "value": to}],
        "commonHeaders": {"from": ["The Weekly <news@example.org>"], "to": [to], "messageId": header_id},
    }


def ses_bounce(provider_id: str, to: str, *, permanent: bool = True, message_id: str | None = None) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": "0102018c1b3e5f2a-6a1b2c3d-0000-0000-0000-000000000000-000000",
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General" if permanent else "MailboxFull",
            "bouncedRecipients": [
                {
                    "emailAddress": to,
                    "action": "failed",
                    "status": "5.1.1" if permanent else "4.2.2",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown" if permanent else "smtp; 452 4.2.2 mailbox full",
                }
            ],
            "timestamp": "2026-12-01T14:00:01.000Z",
            "remoteMtaIp": "198.51.100.25",
            "reportingMTA": "dsn; a6-1.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": ses_mail(provider_id, to, message_id),
    }


def ses_complaint(provider_id: str, to: str, message_id: str | None = None) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "feedbackId": "0102018c1b3e5f2a-complaint-000000",
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": to}],
            "timestamp": "2026-12-01T14:05:00.000Z",
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-12-01T14:00:00.000Z",
        },
        "mail": ses_mail(provider_id, to, message_id),
    }
