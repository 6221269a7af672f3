"""Load test of the provider webhooks with their signature checks: SendGrid's signed Event Webhook
(ECDSA P-256, batches of events), Postmark's basic-auth bounce webhook, Mailgun's HMAC-signed webhook with
its one-time tokens and Amazon SES notifications signed by SNS (RSA SHA256, SignatureVersion 2; one hard
bounce a request each), with wrk.

Usage (PostgreSQL on 127.0.0.1, wrk installed; not part of `make test`):

    .venv/bin/python -m bench.webhooks [--workers 2] [--duration 10] [--connections 16] [--batch 50]

It creates a scratch database with a sent campaign whose ledger rows carry provider message ids, signs
one distinct request body per wrk request with a key made here (each batch: one hard bounce per
--bounce-every events, 50 by default, the rest deliveries; every event about another row), starts
`newsletter serve` with the matching settings and runs wrk with a Lua script that posts the next body
with its signature headers. SES's signing certificate comes from the tests' stand-in for SNS
(tests/snsserver.py: a test CA and a local HTTPS server the app is pointed at), which the settings allow
in development only, so SES is measured on a second `newsletter serve` in that mode.

A 200 means the events are accepted (on disk, in the inbox); the server applies them right after, off
the request path. For each provider it prints requests/s, events/s accepted and latency percentiles
against issue 15's target (>= 1,000 signed events/s on this machine), checks that no request was
refused, waits until the inbox is drained and prints how fast the events were applied; then drops the
database.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from bench.web import bench_database, load_options, milliseconds, run_wrk, seed, serving
from newsletter.db import make_engine
from newsletter.models import EventType
from tests.snsserver import TOPIC, FakeSns, ses_bounce

DATABASE = f"newsletter_bench_webhooks_{os.getpid()}"  # two benches at once never drop each other's
TARGET_EVENTS = 1000  # signed events/s, issue 15
POSTMARK_AUTH = "bench:postmark-webhook-password"
MAILGUN_KEY = "bench-mailgun-webhook-signing-key"

LUA = """
local bodies = {}
local threads, i = 1, 0
function setup(thread)
  counter = (counter or 0) + 1
  thread:set("id", counter - 1)
end
function init(args)
  for line in io.lines(os.getenv("BODIES")) do
    local stamp, signature, body = line:match("^([^\\t]*)\\t([^\\t]*)\\t(.*)$")
    bodies[#bodies + 1] = {stamp, signature, body}
  end
  threads = tonumber(os.getenv("THREADS"))
end
function request()
  local b = bodies[(i * threads + id) % #bodies + 1]
  i = i + 1
  %s
end
"""
SENDGRID = (
    'return wrk.format("POST", "/webhooks/sendgrid", {["Content-Type"] = "application/json", '
    '["X-Twilio-Email-Event-Webhook-Timestamp"] = b[1], ["X-Twilio-Email-Event-Webhook-Signature"] = b[2]}, b[3])'
)
MAILGUN = 'return wrk.format("POST", "/webhooks/mailgun", {["Content-Type"] = "application/json"}, b[3])'
SES = 'return wrk.format("POST", "/webhooks/ses", {["Content-Type"] = "text/plain; charset=UTF-8"}, b[3])'
# The baseline, in the same run on the same server: the health check (one SELECT 1 on a pooled session in a
# worker thread), the cheapest request the app answers from the database; what this machine allows now.
HEALTH = 'return wrk.format("GET", "/healthz")'
POSTMARK = (
    'return wrk.format("POST", "/webhooks/postmark", {["Content-Type"] = "application/json", '
    '["Authorization"] = "Basic ' + base64.b64encode(POSTMARK_AUTH.encode()).decode() + '"}, b[3])'
)


def ledger(url: str) -> list[tuple[int, str]]:
    """Give every row the id a relay would have answered with; (row id, recipient) pairs."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE deliveries SET provider_message_id = 'pid' || id"))
        conn.execute(text("ANALYZE deliveries"))
        rows = conn.execute(
            text("SELECT d.id, s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id ORDER BY d.id")
        ).all()
    engine.dispose()
    return [(row_id, email) for row_id, email in rows]


def sendgrid_bodies(
    rows: list[tuple[int, str]], batch: int, bounce_every: int, key: ec.EllipticCurvePrivateKey
) -> list[str]:
    now = int(time.time())
    lines = []
    for start in range(0, len(rows) - batch + 1, batch):
        events = []
        for n, (row_id, email) in enumerate(rows[start : start + batch]):
            event = {"email": email, "timestamp": now, "event": "delivered", "response": "250 OK",
                     "sg_message_id": f"pid{row_id}.filter0001", "sg_event_id": f"ev{row_id}",
                     "smtp-id": f"<pid{row_id}@ismtpd-1>"}  # fmt: skip
            if n % bounce_every == 0:
                event |= {"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"}
            events.append(event)
        body = json.dumps(events)
        signature = key.sign(f"{now}{body}".encode(), ec.ECDSA(hashes.SHA256()))
        lines.append(f"{now}\t{base64.b64encode(signature).decode()}\t{body}")
    return lines


def postmark_bodies(rows: list[tuple[int, str]]) -> list[str]:
    lines = []
    for row_id, email in rows:
        body = {"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "MessageID": f"pid{row_id}",
                "Email": email, "Description": "Unknown user", "Details": "smtp;550 5.1.1 no such user",
                "BouncedAt": "2026-12-01T14:00:00Z", "MessageStream": "outbound"}  # fmt: skip
        lines.append(f"\t\t{json.dumps(body)}")
    return lines


def mailgun_bodies(rows: list[tuple[int, str]]) -> list[str]:
    """One signed hard bounce a request (HMAC-SHA256 of timestamp + a one-time token), Mailgun's format."""
    now = str(int(time.time()))
    lines = []
    for row_id, email in rows:
        token = f"bench-token-{row_id}-{os.getpid()}"
        signature = hmac.new(MAILGUN_KEY.encode(), (now + token).encode(), hashlib.sha256).hexdigest()
        body = {"signature": {"timestamp": now, "token": token, "signature": signature},
                "event-data": {"event": "failed", "severity": "permanent", "recipient": email,
                               "message": {"headers": {"message-id": f"pid{row_id}"}},
                               "delivery-status": {"code": 550, "enhanced-code": "5.1.1",
                                                   "description": "no such user"}}}  # fmt: skip
        lines.append(f"\t\t{json.dumps(body)}")
    return lines


def ses_bodies(rows: list[tuple[int, str]], sns: FakeSns) -> list[str]:
    """One SNS notification of an SES hard bounce a request, signed by the stand-in's certificate."""
    return [f"\t\t{json.dumps(sns.envelope(ses_bounce(f'pid{row_id}', email), version='2'))}" for row_id, email in rows]


def applied(url: str, provider: str, timeout: float = 300) -> str:
    """Wait until the server has applied every event of `provider` it accepted; how fast it did."""
    engine = make_engine(url)
    query = text(
        "SELECT count(*), count(processed_at), min(received_at), max(processed_at) FROM provider_inbox "
        "WHERE provider = :p"
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                total, done, first, last = conn.execute(query, {"p": provider}).one()
            if done == total or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    seconds = (last - first).total_seconds() if first and last else 0.0
    rate = done / seconds if seconds else 0.0
    return f"{done} of {total} accepted events applied, {rate:.0f} events/s from the first acceptance to the last"


def run(base: str, name: str, request: str, lines: list[str], per_request: int, args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as scratch:
        bodies, script = Path(scratch) / "bodies.txt", Path(scratch) / "post.lua"
        bodies.write_text("\n".join(lines) + "\n")
        script.write_text(LUA.replace("%s", request))
        before = os.getloadavg()[0]
        output = run_wrk(base, script, args, BODIES=str(bodies))
    print(output, flush=True)
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    rate = float(rate_match[1]) if rate_match else 0.0
    pcts = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", output, re.MULTILINE))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    events = rate * per_request
    met = events >= TARGET_EVENTS and not refused
    return (
        f"{name:58} {rate:7.0f} req/s {events:8.0f} events/s   p50 {pcts.get('50', '?'):>8}  p99 "
        f"{pcts.get('99', '?'):>8} ({milliseconds(pcts['99']) if '99' in pcts else 0:.0f} ms)   "
        f"{'met' if met else 'NOT MET':7}  load {before:.2f}->{os.getloadavg()[0]:.2f}   "
        f"non-2xx: {refused[1] if refused else 0}"
    )


def recorded(url: str) -> str:
    with make_engine(url).connect() as conn:
        bounces, suppressions = conn.execute(
            text("SELECT (SELECT count(*) FROM events WHERE type = :bounce), (SELECT count(*) FROM suppressions)"),
            {"bounce": EventType.bounce.value},
        ).one()
    return f"recorded: {bounces} bounce events, {suppressions} suppressions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_options(parser, connections=16, duration=10, per="webhook")
    parser.add_argument("--batch", type=int, default=50, help="events per SendGrid request")
    parser.add_argument("--rows", type=int, default=100_000, help="ledger rows (one event each)")
    parser.add_argument(
        "--bounce-every",
        type=int,
        default=50,
        help="one hard bounce per this many SendGrid events (2%%), the rest deliveries",
    )
    args = parser.parse_args()

    with bench_database(DATABASE) as url, tempfile.TemporaryDirectory(prefix="bench-sns-") as scratch:
        print(f"seeding {args.rows} ledger rows ...", flush=True)
        seed(url, args.rows)
        rows = ledger(url)
        quarter = len(rows) // 4  # each webhook acts on rows of its own
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keys = {
            "sendgrid_webhook_public_key": base64.b64encode(public).decode(),
            "postmark_webhook_auth": POSTMARK_AUTH,
            "mailgun_webhook_signing_key": MAILGUN_KEY,
        }
        results: list[str] = []
        with serving(url, args.workers, **keys) as (base, command):
            results.append(run(base, "baseline: GET /healthz (SELECT 1)", HEALTH, ["\t\t"], 1, args))
            for name, provider, script, lines, per_request in (
                (f"sendgrid, signed, {args.batch} events/request, 1 in {args.bounce_every} a bounce", "sendgrid",
                 SENDGRID, sendgrid_bodies(rows[:quarter], args.batch, args.bounce_every, key), args.batch),
                ("postmark, basic auth, 1 hard bounce/request", "postmark", POSTMARK,
                 postmark_bodies(rows[quarter : 2 * quarter]), 1),
                ("mailgun, HMAC + one-time token, 1 hard bounce/request", "mailgun", MAILGUN,
                 mailgun_bodies(rows[2 * quarter : 3 * quarter]), 1),
            ):  # fmt: skip
                results.append(run(base, name, script, lines, per_request, args))
                results.append(f"{'':58} {applied(url, provider)}")
        sns = FakeSns(Path(scratch))
        try:
            print("signing the SNS notifications ...", flush=True)
            lines = ses_bodies(rows[3 * quarter :], sns)
            development = {"environment": "development", "ses_topic_arns": TOPIC, "sns_certificate_mirror": sns.mirror,
                           "sns_certificate_ca_file": str(sns.ca_file)}  # fmt: skip
            with serving(url, args.workers, **development) as (base, ses_command):
                results.append(
                    run(base, "ses via sns, RSA SHA256 signature, 1 hard bounce/request", SES, lines, 1, args)
                )
                results.append(f"{'':58} {applied(url, 'ses')}")
        finally:
            sns.stop()
        print(
            f"\n$ {' '.join(command)}\n$ {' '.join(ses_command)}   (SES: NEWSLETTER_ENVIRONMENT=development, for the "
            f"test SNS certificate host)\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, a distinct "
            f"body per request, {os.cpu_count()} CPUs; target: >= {TARGET_EVENTS} signed events/s"
        )
        print("\n".join(results))
        print(recorded(url))


if __name__ == "__main__":
    main()
