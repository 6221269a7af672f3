"""Turn a campaign rendered once plus one recipient into signed, ready-to-send MIME bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from newsletter import i18n, rendering
from newsletter.config import Settings
from newsletter.dkim import DkimSigner, canonical_fields, relaxed_field, relaxed_piece, signer_for
from newsletter.errors import Invalid
from newsletter.links import confirm_url
from newsletter.models import Subscription
from newsletter.tokens import Tokens

__all__ = [
    "NAME_PLACEHOLDER",
    "CampaignMessage",
    "InvalidHeader",
    "Recipient",
    "clean_value",
    "compose_confirmation",
]

NAME_PLACEHOLDER = "%%NAME%%"
# Any %%UPPER_CASE%% token in the rendered parts is a slot; rendering.py decides which ones exist.
PLACEHOLDER = re.compile(r"%%[A-Z][A-Z0-9_]*%%")

# C0/C1 controls, DEL and the Unicode line/paragraph separators: any of them in a header could
# start a new header line in some parser, and none of them belongs in a name or a subject.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
_ADDR_SPEC = re.compile(r"[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+@[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+")
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_URL = re.compile(r"[^\s<>\x00-\x1f\x7f]+")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_CRLF = b"\r\n"
_SOFT_BREAK = b"=\r\n"
_MAX_HEADER_LINE = 78
_WORD_BYTES = 39  # 39 UTF-8 bytes -> 52 base64 chars -> a 64-char encoded word (RFC 2047 max 75)

# Headers this module writes itself; callers may not smuggle a second copy in via `headers=`.
_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Content-Type",
        "Content-Transfer-Encoding",
        "DKIM-Signature",
        "Bcc",
        "Cc",
        "Sender",
    )
)


class InvalidHeader(Invalid):
    """An address, Message-ID, URL or header name that cannot be written into a header safely."""


def clean_value(value: str) -> str:
    """Replace each run of control or line-separator characters with one space."""
    return _CONTROLS.sub(" ", value)


@dataclass(frozen=True)
class Recipient:
    """The personal parts of one delivery."""

    email: str
    name: str | None
    message_id: str  # full "<...@domain>" form
    values: Mapping[str, str]  # placeholder -> raw (unescaped) value, e.g. {"%%NAME%%": "Ana"}
    unsubscribe_url: str


# --- header encoding -------------------------------------------------------------------------


def _encoded_words(text: str) -> str:
    """RFC 2047 B-encoded words, split on character boundaries and folded one word per line."""
    words: list[str] = []
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(base64.b64encode(chunk).decode("ascii"))
            chunk.clear()
        chunk += encoded
    if chunk:
        words.append(base64.b64encode(chunk).decode("ascii"))
    return "\r\n ".join(f"=?utf-8?b?{w}?=" for w in words)


def _needs_encoding(text: str) -> bool:
    # "=?" would otherwise be decoded by the reader as an encoded word that was never meant.
    return not text.isascii() or "=?" in text


def _phrase(name: str) -> str:
    """A display name as an RFC 5322 phrase: atoms, a quoted string or encoded words."""
    if _needs_encoding(name):
        # One word, even past RFC 2047's 75 chars, as the stdlib writes it: Python's address
        # parser (and others) put a space between adjacent encoded words in a phrase.
        word = f"=?utf-8?b?{base64.b64encode(name.encode()).decode()}?="
        return word if len(word) <= 700 else _encoded_words(name)
    if _ATOM_PHRASE.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unstructured(text: str, prefix: int) -> str:
    """An unstructured header value (e.g. Subject), folded at spaces or encoded."""
    if _needs_encoding(text):
        return _encoded_words(text)
    if prefix + len(text) <= _MAX_HEADER_LINE or " " not in text:
        return text
    lines: list[str] = []
    words: list[str] = []
    width = prefix
    for word in text.split(" "):
        # fold only before a non-empty word, so no line is whitespace alone
        if words and word and width + 1 + len(word) > _MAX_HEADER_LINE:
            lines.append(" ".join(words))
            words, width = [word], 1 + len(word)  # the fold's space stands for the one split at
        else:
            width += (1 if words else 0) + len(word)
            words.append(word)
    lines.append(" ".join(words))
    return "\r\n ".join(lines)


def _addr_spec(email: str) -> str:
    email = email.strip()
    if not _ADDR_SPEC.fullmatch(email):
        raise InvalidHeader(f"not a usable email address: {email!r}")
    local, _, domain = email.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


def _address(name: str | None, email: str) -> str:
    """`Display Name <addr>`; the name is cleaned of controls first, so it can never start a header."""
    spec = _addr_spec(email)
    # whitespace runs collapse too: readers fold them anyway, so the result stays predictable
    display = " ".join(clean_value(name).split()) if name else ""
    return f"{_phrase(display)} <{spec}>" if display else spec


def _header(name: str, value: str) -> str:
    return f"{name}: {value}\r\n"


# --- quoted-printable skeleton --------------------------------------------------------------


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF hard breaks and soft breaks keeping lines within 76 chars."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _fit_lines(binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", _CRLF))


def _qp_value(value: str) -> bytes:
    # Values were cleaned of line breaks, so this is one soft-wrapped logical line.
    return _room_for_soft_break(binascii.b2a_qp(value.encode("utf-8"), istext=True).replace(b"\n", _CRLF))


def _room_for_soft_break(encoded: bytes) -> bytes:
    """Fit lines as `_fit_lines` does, keeping the last one within 75 chars so a soft break fits after it."""
    return _fit_lines(encoded, last_soft=True)


def _fit_lines(encoded: bytes, *, last_soft: bool = False) -> bytes:
    """QP lines within 76 chars where none starts with "." (written "=2E"), so SMTP never needs to
    dot-stuff a message (RFC 5321 §4.5.2): stuffing a 37 KB message cost more than composing it."""
    lines = encoded.split(_CRLF)
    # every line, not only the last: binascii writes a space before a hard break as "=20" after its own
    # 76-character check, so such a line may be 77 long
    fits = all(len(line) <= 76 for line in lines[:-1]) and len(lines[-1]) <= 76 - last_soft
    if fits and not encoded.startswith(b".") and b"\n." not in encoded:
        return encoded
    out: list[bytes] = []
    for number, line in enumerate(lines, 1):
        soft = line.endswith(b"=") or (last_soft and number == len(lines))
        text = line[:-1] if line.endswith(b"=") else line
        while True:
            if text.startswith(b"."):
                text = b"=2E" + text[1:]
            if len(text) + soft <= 76:
                break
            # move the tail to a line of its own, never cutting an "=XX" escape in two
            cut = 75
            if text[cut - 1 : cut] == b"=":
                cut -= 1
            elif text[cut - 2 : cut - 1] == b"=":
                cut -= 2
            out.append(text[:cut] + b"=")
            text = text[cut:]
        out.append(text + b"=" if line.endswith(b"=") else text)
    return _CRLF.join(out)


def _skeleton(content: str) -> list[bytes | str]:
    """Encoded literal chunks with placeholder names (str) in between.

    Every placeholder sits between soft line breaks, so each substituted value starts a fresh QP
    line and no substitution can split an escape or push a line past 76 characters.
    """
    pieces: list[bytes | str] = []
    literals = PLACEHOLDER.split(content)
    slots = PLACEHOLDER.findall(content)
    for i, literal in enumerate(literals):
        encoded = _qp(literal)
        first, last = i == 0, i == len(literals) - 1
        if not last and encoded and not encoded.endswith(_CRLF):
            encoded = _room_for_soft_break(encoded) + _SOFT_BREAK
        # no soft break may dangle at the very end, against the closing boundary
        chunk = b"" if last and not encoded else (b"" if first else _SOFT_BREAK) + encoded
        if chunk:
            pieces.append(chunk)
        if not last:
            pieces.append(slots[i])
    return pieces


def _list_id_value(list_id: str) -> str:
    list_name, _, list_addr = clean_value(list_id).rpartition("<")
    list_addr = list_addr.strip().rstrip(">").strip()
    if not _URL.fullmatch(list_addr):
        raise InvalidHeader(f"not a usable List-Id: {list_id!r}")
    if list_name.strip():
        return f"{_phrase(list_name.strip())} <{list_addr}>"
    return f"<{list_addr}>"


def _mailto_value(unsubscribe_mailto: str) -> str:
    mailto = unsubscribe_mailto.strip()
    if not mailto.startswith("mailto:"):
        mailto = "mailto:" + mailto
    if not _URL.fullmatch(mailto):
        raise InvalidHeader(f"not a usable unsubscribe mailto: {unsubscribe_mailto!r}")
    return mailto


def _head_tail(headers: Mapping[str, str], boundary: str) -> bytes:
    """The headers after List-Unsubscribe: the one-click marker, the caller's own, the MIME type."""
    tail = [_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise InvalidHeader(f"cannot add header {name!r}")
        tail.append(_header(name, _unstructured(clean_value(value).strip(), len(name) + 2)))
    tail.append(_header("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
    tail.append("\r\n")
    return "".join(tail).encode("utf-8")


class CampaignMessage:
    """One campaign's message, pre-encoded once; `render()` adds a recipient in microseconds.

    `list_id` is either the bare id (`weekly.news.example.org`) or `Name <weekly.news.example.org>`.
    Placeholders missing from a recipient's `values` stay as they are, except `%%NAME%%`, which
    falls back to the recipient's name and then to `name_fallback`.
    """

    def __init__(
        self,
        *,
        subject: str,
        from_email: str,
        from_name: str | None,
        list_id: str,
        html: str,
        text: str,
        reply_to: str | None = None,
        unsubscribe_mailto: str | None = None,
        headers: Mapping[str, str] | None = None,
        dkim: DkimSigner | None = None,
        name_fallback: str = "reader",
    ) -> None:
        self.dkim = dkim
        self.name_fallback = name_fallback
        subject = clean_value(subject).strip()

        # Hand-written composer for speed: EmailMessage + as_bytes() costs ~4 ms per recipient.
        head = [_header("From", _address(from_name, from_email))]
        if reply_to:
            head.append(_header("Reply-To", _address(None, reply_to)))
        self._head_from = "".join(head).encode("utf-8")
        self._head_subject = _header("Subject", _unstructured(subject, len("Subject: "))).encode()

        self._head_list = (_header("MIME-Version", "1.0") + _header("List-Id", _list_id_value(list_id))).encode()
        self._mailto = _mailto_value(unsubscribe_mailto) if unsubscribe_mailto else ""
        self._boundary = "=_nl_" + secrets.token_hex(12)  # "=_" cannot occur in QP-encoded text
        self._head_tail = _head_tail(headers or {}, self._boundary)

        def part_head(subtype: str) -> bytes:
            return (
                f"--{self._boundary}\r\n"
                f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ).encode("ascii")

        # Body pieces: bytes are final; a (placeholder, is_html) tuple is filled per recipient.
        body: list[bytes | tuple[str, bool]] = [part_head("plain")]
        body += [p if isinstance(p, bytes) else (p, False) for p in _skeleton(text)]
        body.append(b"\r\n" + part_head("html"))
        body += [p if isinstance(p, bytes) else (p, True) for p in _skeleton(html)]
        body.append(f"\r\n--{self._boundary}--\r\n".encode("ascii"))
        self._body = [p if isinstance(p, bytes) else b"" for p in body]
        # No piece ends in whitespace (QP encodes it) and slots sit next to CRLF or "=", so the
        # relaxed body canonicalisation can be done piecewise: literals once, values per recipient.
        self._body_relaxed = [relaxed_piece(p) for p in self._body]
        # Each distinct (placeholder, is_html) is encoded once per recipient and placed at all its slots
        # (a tracked issue has dozens of links sharing one token).
        slots: dict[tuple[str, bool], list[int]] = {}
        for i, p in enumerate(body):
            if isinstance(p, tuple):
                slots.setdefault(p, []).append(i)
        self._slots = [(placeholder, is_html, indices) for (placeholder, is_html), indices in slots.items()]
        # DKIM: the relaxed forms of the headers that are the same in every copy, made once; per copy only
        # To, Date (once a second), Message-ID and List-Unsubscribe are canonicalised (dkim.sign_canonical).
        fixed = self._head_from + self._head_subject + self._head_list + self._head_tail.removesuffix(b"\r\n")
        self._dkim_fixed = canonical_fields(fixed) if dkim else {}
        self._date_second, self._date, self._date_relaxed = -1, b"", b""

    def _date_header(self) -> bytes:
        # formatdate costs more than the rest of the headers together; one per second is enough.
        now = int(time.time())
        if now != self._date_second:
            self._date = _header("Date", formatdate(now, usegmt=True)).encode("ascii")
            self._date_relaxed = relaxed_field(self._date)
            self._date_second = now
        return self._date

    def render(self, recipient: Recipient) -> bytes:
        """The complete message for one recipient, CRLF line endings, DKIM-signed if configured."""
        message_id = recipient.message_id.strip()
        if not _MESSAGE_ID.fullmatch(message_id):
            raise InvalidHeader(f"not a usable Message-ID: {recipient.message_id!r}")
        url = recipient.unsubscribe_url.strip()
        if not _URL.fullmatch(url):
            raise InvalidHeader(f"not a usable unsubscribe URL: {recipient.unsubscribe_url!r}")
        unsubscribe = f"<{url}>"
        if self._mailto:
            sep = ",\r\n " if len(unsubscribe) + len(self._mailto) > 50 else ", "
            unsubscribe = f"{unsubscribe}{sep}<{self._mailto}>"

        values = recipient.values
        body = self._body.copy()
        relaxed = self._body_relaxed.copy() if self.dkim else None
        for placeholder, is_html, indices in self._slots:
            value = values.get(placeholder)
            if placeholder == NAME_PLACEHOLDER and not value:
                value = recipient.name or self.name_fallback
            value = placeholder if value is None else clean_value(value)
            piece = _qp_value(html.escape(value, quote=True) if is_html else value)
            for index in indices:
                body[index] = piece
            if relaxed is not None:
                relaxed_form = relaxed_piece(piece)
                for index in indices:
                    relaxed[index] = relaxed_form

        to = _header("To", _address(recipient.name, recipient.email)).encode("utf-8")
        message_id_field = _header("Message-ID", message_id).encode("ascii")
        unsubscribe_field = _header("List-Unsubscribe", unsubscribe).encode("ascii")
        date = self._date_header()
        message = b"".join(
            (
                self._head_from,
                to,
                self._head_subject,
                date,
                message_id_field,
                self._head_list,
                unsubscribe_field,
                self._head_tail,
                *body,
            )
        )
        if self.dkim is None or relaxed is None:
            return message
        # These four are _OWN_HEADERS: no caller's header shares their names, so each has one instance.
        fields = {
            **self._dkim_fixed,
            b"to": (relaxed_field(to),),
            b"date": (self._date_relaxed,),
            b"message-id": (relaxed_field(message_id_field),),
            b"list-unsubscribe": (relaxed_field(unsubscribe_field),),
        }
        return self.dkim.sign_canonical(message, fields, hashlib.sha256(b"".join(relaxed)).digest())


# --- the confirmation email ----------------------------------------------------------------------------


def compose_confirmation(settings: Settings, tokens: Tokens, subscription: Subscription) -> bytes:
    """The confirmation email for one pending subscription, as CRLF MIME bytes (DKIM-signed if configured).

    Sent one at a time and rarely, so the stdlib composes it (~4 ms) instead of a campaign skeleton.
    """
    mailing_list, subscriber = subscription.mailing_list, subscription.subscriber
    rendered = rendering.render_confirmation(
        theme=rendering.theme_for(mailing_list),
        list_name=mailing_list.name,
        list_description=mailing_list.description,
        confirm_url=confirm_url(
            settings.base_url, tokens, subscriber.id, mailing_list.id, bound_to=subscriber.created_at
        ),
        name=subscriber.name,
        # The reader's language when they chose one (the subscribe form's), else the list's.
        language=i18n.page_language(subscriber.language, mailing_list.language, None),
    )
    message = EmailMessage(policy=email_policy.SMTP)
    message["From"] = Address(
        clean_value(mailing_list.from_name or mailing_list.name), addr_spec=mailing_list.from_email
    )
    message["To"] = Address(clean_value(subscriber.name), addr_spec=subscriber.email)
    if mailing_list.reply_to:
        message["Reply-To"] = mailing_list.reply_to
    message["Subject"] = clean_value(rendered.subject)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid("confirm", domain=mailing_list.from_email.rpartition("@")[2])
    # RFC 3834: vacation responders must not answer an automatic message.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    data = message.as_bytes()
    signer = signer_for(settings)
    return data if signer is None else signer.sign(data)
