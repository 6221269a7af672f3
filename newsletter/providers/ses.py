"""Amazon SES notifications, delivered by SNS: every message is signed by SNS (SignatureVersion 1, RSA
with SHA1, or 2, with SHA256) with a certificate it publishes at `SigningCertURL`. The URL must be an
official SNS one before it is fetched (over HTTPS only, then cached), the topic must be on the allowlist,
and a message older than an hour is refused; only then is the SES event inside `Message` read. A
SubscriptionConfirmation is confirmed (GET SubscribeURL, itself checked to be SNS's) for allowed topics
only.

https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from newsletter.config import Settings
from newsletter.errors import Unavailable
from newsletter.providers import (
    BadPayload,
    Notice,
    NotVerified,
    ProviderEvent,
    WebhookOff,
    check_basic_auth,
    check_fresh,
    normalise_message_id,
    object_of,
    text_of,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

# `cryptography` is imported by the first SNS message checked (the web process that never receives one
# does without its ~7 MB), as in sendgrid.py, dkim.py and twofactor.py.

MAX_AGE = dt.timedelta(hours=1)
_SNS_HOST = r"sns\.[a-z]{2}(?:-[a-z]+)+-\d\.amazonaws\.com(?:\.cn)?"
CERT_URL = re.compile(rf"https://{_SNS_HOST}/SimpleNotificationService-[0-9a-f]{{16,64}}\.pem")
SUBSCRIBE_URL = re.compile(rf"https://{_SNS_HOST}/\?[^#\s]*")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES = {"1": "SHA1", "2": "SHA256"}  # SignatureVersion -> the hash's class in cryptography
_MAX_CERT_BYTES = 64 * 1024


def verify(settings: Settings, headers: Mapping[str, str], body: bytes) -> Notice:
    if not settings.ses_topic_arns:
        raise WebhookOff("Amazon SES", "SES_TOPIC_ARNS")
    if settings.ses_webhook_auth:
        check_basic_auth(headers, settings.ses_webhook_auth)
    envelope = _envelope(body)
    kind, topic = envelope["Type"], envelope["TopicArn"]
    if topic not in settings.ses_topic_arns:
        raise NotVerified(f"the topic {topic[:200]} is not in NEWSLETTER_SES_TOPIC_ARNS")
    if not CERT_URL.fullmatch(envelope["SigningCertURL"]):
        raise NotVerified("SigningCertURL is not an Amazon SNS certificate URL")
    check_fresh(_timestamp(envelope["Timestamp"]), MAX_AGE)
    _check_signature(settings, envelope)
    if kind == "SubscriptionConfirmation":
        _confirm(settings, envelope.get("SubscribeURL", ""))
        return Notice([], confirmed_topic=topic)
    if kind == "Notification":
        # SNS's MessageId is the same on its retries; one notification may name several recipients
        events = parse_message(envelope["Message"])
        return Notice([replace(e, event_id=f"{envelope['MessageId']}:{n}") for n, e in enumerate(events)])
    return Notice([])  # UnsubscribeConfirmation: nothing to do


def _envelope(body: bytes) -> dict[str, str]:
    try:
        envelope = json.loads(body)
    except ValueError:
        raise NotVerified("the body is not an SNS message (not JSON)") from None
    if not isinstance(envelope, dict) or envelope.get("Type") not in _SIGNED_FIELDS:
        raise NotVerified("the body is not an SNS message (no known Type)")
    needed = ("TopicArn", "SignatureVersion", "Signature", "SigningCertURL", "Timestamp", "Message", "MessageId")
    if any(not isinstance(envelope.get(name), str) for name in needed):
        raise NotVerified("the SNS message lacks one of " + ", ".join(needed))
    return envelope


def _timestamp(value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise NotVerified("the SNS Timestamp is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def signed_text(envelope: Mapping[str, Any]) -> bytes:
    """The string SNS signs: each signed field present, as `name\\nvalue\\n`, in this order."""
    fields = _SIGNED_FIELDS[envelope["Type"]]
    return "".join(f"{name}\n{envelope[name]}\n" for name in fields if name in envelope).encode()


def _check_signature(settings: Settings, envelope: dict[str, str]) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    name = _HASHES.get(envelope["SignatureVersion"])
    if name is None:
        raise NotVerified(f"unknown SNS SignatureVersion {envelope['SignatureVersion'][:10]!r}")
    try:
        signature = base64.b64decode(envelope["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise NotVerified("the SNS Signature is not base64") from None
    key = _certificates.public_key(settings, envelope["SigningCertURL"])
    try:
        key.verify(signature, signed_text(envelope), padding.PKCS1v15(), getattr(hashes, name)())
    except InvalidSignature:
        raise NotVerified("the SNS signature does not verify") from None


class _Certificates:
    """SNS signing keys by certificate URL, fetched once per process (SNS rotates them rarely)."""

    def __init__(self) -> None:
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def public_key(self, settings: Settings, url: str) -> rsa.RSAPublicKey:
        location = _fetch_url(settings, url)
        with self._lock:
            key = self._keys.get(location)
        if key is None:
            key = _signing_key(_get(settings, location, limit=_MAX_CERT_BYTES))
            with self._lock:
                if len(self._keys) > 64:
                    self._keys.clear()
                self._keys[location] = key
        return key


_certificates = _Certificates()


def _signing_key(pem: bytes) -> rsa.RSAPublicKey:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise NotVerified("the SNS signing certificate is not a PEM certificate") from None
    now = dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise NotVerified("the SNS signing certificate is expired or not yet valid")
    names = [a.value for a in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if not any(str(n).endswith((".amazonaws.com", ".amazonaws.com.cn")) for n in names):
        raise NotVerified("the SNS signing certificate is not Amazon's")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise NotVerified("the SNS signing certificate has no RSA key")
    return key


def _fetch_url(settings: Settings, url: str) -> str:
    """Where an official SNS URL is fetched from: itself, or in tests the same path on the mirror."""
    if not settings.sns_certificate_mirror:
        return url
    parts = urlsplit(url)
    return settings.sns_certificate_mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _get(settings: Settings, url: str, *, limit: int) -> bytes:
    if not url.startswith("https://"):  # never reached with a checked URL; kept as the last line of defence
        raise NotVerified("SNS URLs are fetched over HTTPS only")
    context = ssl.create_default_context(cafile=str(settings.sns_certificate_ca_file or "") or None)
    # No redirects: the opener is built with the HTTPS handler only.
    opener = urllib.request.OpenerDirector()
    opener.add_handler(urllib.request.HTTPSHandler(context=context))
    opener.add_handler(urllib.request.HTTPErrorProcessor())
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=5) as response:  # noqa: S310
            if response.status != 200:
                raise Unavailable(f"Amazon SNS answered {response.status} for {url}")
            data: bytes = response.read(limit + 1)
    except OSError as exc:
        raise Unavailable(f"could not reach Amazon SNS ({url}): {exc}") from None
    if len(data) > limit:
        raise NotVerified(f"{url} answered more than {limit} bytes")
    return data


def _confirm(settings: Settings, subscribe_url: str) -> None:
    if not SUBSCRIBE_URL.fullmatch(subscribe_url):
        raise NotVerified("SubscribeURL is not an Amazon SNS URL")
    _get(settings, _fetch_url(settings, subscribe_url), limit=_MAX_CERT_BYTES)


# --- the SES event inside ---------------------------------------------------------------------------------


def parse_message(text: str) -> list[ProviderEvent]:
    """The events of an SES notification (notificationType) or event publishing record (eventType)."""
    try:
        message = json.loads(text)
    except ValueError:
        raise BadPayload("the SNS Message is not an SES notification (not JSON)") from None
    if not isinstance(message, dict):
        raise BadPayload("the SNS Message is not an SES notification")
    kind = message.get("notificationType") or message.get("eventType")
    mail = object_of(message.get("mail"))
    ids = {"message_id": _our_message_id(mail), "provider_message_id": text_of(mail.get("messageId"))}
    if kind == "Bounce":
        bounce = _object(message, "bounce")
        hard = bounce.get("bounceType") == "Permanent"
        return [
            ProviderEvent(
                kind="hard_bounce" if hard else "soft_bounce",
                recipient=text_of(who.get("emailAddress")),
                status=text_of(who.get("status")),
                diagnostic=text_of(who.get("diagnosticCode") or bounce.get("bounceSubType")),
                **ids,
            )
            for who in _objects(bounce, "bouncedRecipients")
        ]
    if kind == "Complaint":
        complaint = _object(message, "complaint")
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []
        feedback = text_of(complaint.get("complaintFeedbackType")) or "abuse"
        return [
            ProviderEvent(kind="complaint", recipient=text_of(who.get("emailAddress")), diagnostic=feedback, **ids)
            for who in _objects(complaint, "complainedRecipients")
        ]
    if kind == "Delivery":
        return [
            ProviderEvent(kind="delivered", recipient=text_of(who), **ids)
            for who in _object(message, "delivery").get("recipients", [])
        ]
    return []  # Send, Reject, Open, Click, DeliveryDelay, ...


def _object(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if not isinstance(value, dict):
        raise BadPayload(f"the SES notification has no {name} object")
    return value


def _objects(parent: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = parent.get(name)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _our_message_id(mail: dict[str, Any]) -> str | None:
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and common.get("messageId"):
        return normalise_message_id(str(common["messageId"]))
    for header in _objects(mail, "headers"):
        if str(header.get("name", "")).lower() == "message-id" and header.get("value"):
            return normalise_message_id(str(header["value"]))
    return None
