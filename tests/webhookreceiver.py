"""A webhook receiver for the tests: a real HTTP server in a thread that records every request and
answers with the status codes it is told to, and the Standard Webhooks signature check written out from
the specification (not from the package the sender uses)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import threading
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The specification's algorithm: the key is the base64 after `whsec_`; the signed content is
    `{webhook-id}.{webhook-timestamp}.{body}`; the header holds space-separated `v1,<base64 HMAC-SHA256>`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


@dataclass
class Receiver:
    """`answers` are the status codes of the next requests, in order; then `default` for the rest."""

    default: int = 204
    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    reply_body: bytes = b""

    def __post_init__(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.answers.pop(0) if receiver.answers else receiver.default
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                self.send_header("content-length", str(len(receiver.reply_body)))
                self.end_headers()
                self.wfile.write(receiver.reply_body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
