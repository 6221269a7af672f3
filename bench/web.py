"""Load test of the hot public endpoints: one-click unsubscribe, open pixel and click redirect, with wrk.

Usage (PostgreSQL on 127.0.0.1, wrk installed; not part of `make test`):

    .venv/bin/python -m bench.web [--workers 2] [--duration 15] [--connections 32] [--subscribers 60000]

It creates a scratch database, seeds a list with confirmed subscribers and a sent campaign, writes one
distinct valid token per request into files, starts `newsletter serve` on a free loopback port and runs
wrk with a Lua script per endpoint (each request uses the next token, so every one-click POST
unsubscribes somebody new). Prints requests/s and latency percentiles per endpoint against issue 5's
target (>= 1,000 requests/s with p99 < 50 ms), the machine's load average, and drops the database.
wrk is closed-loop: it sends as fast as the server answers, so the p99 is the one at full saturation.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from newsletter.db import make_engine
from newsletter.migrate import upgrade
from newsletter.models import (
    CampaignStatus,
    DeliveryStatus,
    EventType,
    OptIn,
    SubscriberStatus,
    SubscriptionSource,
    SubscriptionStatus,
    Visibility,
)
from newsletter.tokens import TokenPurpose, Tokens

ADMIN_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DATABASE = "newsletter_bench_web"
SECRET = "bench-secret-key-0123456789abcdef-not-for-production"  # noqa: S105 - a scratch database

LUA = """
-- `id` is a global that setup() sets in each thread's own Lua state (a local here would shadow it).
local tokens = {}
local threads, i = 1, 0
function setup(thread)
  counter = (counter or 0) + 1
  thread:set("id", counter - 1)
end
function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  threads = tonumber(os.getenv("THREADS"))
end
function request()
  local n = (i * threads + id) % #tokens + 1
  i = i + 1
  %s
end
"""
REQUESTS = {
    "one-click unsubscribe": (
        "unsubscribe",
        'return wrk.format("POST", "/unsubscribe/" .. tokens[n], '
        '{["Content-Type"] = "application/x-www-form-urlencoded"}, "List-Unsubscribe=One-Click")',
    ),
    "open pixel": ("track", 'return wrk.format("GET", "/o/" .. tokens[n])'),
    "click redirect": ("track", 'return wrk.format("GET", "/c/" .. tokens[n] .. ".1")'),
}


def seed(url: str, subscribers: int) -> tuple[list[str], list[str]]:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        list_id = conn.execute(
            text(
                "INSERT INTO mailing_lists (slug, name, description, from_name, from_email, opt_in, visibility, "
                "postal_address, theme, tracking, form_fields, cors_origins, created_at, updated_at) VALUES "
                "('bench', 'Bench Weekly', '', '', 'news@bench.example', :opt_in, :visibility, '', '{}', true, "
                "'[]', '[]', now(), now()) RETURNING id"
            ),
            {"opt_in": OptIn.double.value, "visibility": Visibility.public.value},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, status, created_at, "
                "updated_at) SELECT 'r' || g || '@bench.example', md5(g::text) || md5(g::text), 'bench.example', "
                "'', '{}', :active, now(), now() "
                "FROM generate_series(1, :n) g"
            ),
            {"n": subscribers, "active": SubscriberStatus.active.value},
        )
        conn.execute(
            text(
                "INSERT INTO subscriptions (subscriber_id, list_id, status, source, confirmed_at, created_at, "
                "updated_at) SELECT id, :l, :confirmed, :source, now(), now(), now() FROM subscribers"
            ),
            {"l": list_id, "confirmed": SubscriptionStatus.confirmed.value, "source": SubscriptionSource.import_.value},
        )
        digest_id = conn.execute(
            text(
                "INSERT INTO digests (slug, title, date, content_hash, published_at, updated_at) "
                "VALUES ('bench', 'Bench', current_date, '', now(), now()) RETURNING id"
            )
        ).scalar_one()
        campaign_id = conn.execute(
            text(
                "INSERT INTO campaigns (digest_id, subject, status, recipient_count, created_at, updated_at) "
                "VALUES (:d, 'Bench', :sending, :n, now(), now()) RETURNING id"
            ),
            {"d": digest_id, "n": subscribers, "sending": CampaignStatus.sending.value},
        ).scalar_one()
        conn.execute(text("INSERT INTO campaign_lists VALUES (:c, :l)"), {"c": campaign_id, "l": list_id})
        conn.execute(
            text("INSERT INTO links (campaign_id, position, url) VALUES (:c, 1, 'https://example.org/story')"),
            {"c": campaign_id},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (campaign_id, subscriber_id, list_id, status, attempts, created_at) "
                "SELECT :c, id, :l, :sent, 1, now() FROM subscribers ORDER BY id"
            ),
            {"c": campaign_id, "l": list_id, "sent": DeliveryStatus.sent.value},
        )
        conn.execute(text("ANALYZE"))
        subscriber_ids = conn.execute(text("SELECT id FROM subscribers ORDER BY id")).scalars().all()
        delivery_ids = conn.execute(text("SELECT id FROM deliveries ORDER BY id")).scalars().all()
    engine.dispose()
    tokens = Tokens(SECRET)
    return (
        [tokens.make(TokenPurpose.unsubscribe, s, list_id) for s in subscriber_ids],
        [tokens.make(TokenPurpose.track, d) for d in delivery_ids],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(base: str, timeout: float = 120) -> None:  # workers start slowly on a loaded machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("newsletter serve did not come up")


def run_wrk(base: str, script: Path, args: argparse.Namespace, **script_env: str) -> str:
    """wrk with `args`' threads, connections and duration, running `script` (which reads `script_env`)."""
    env = {**os.environ, "THREADS": str(args.threads), **script_env}
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "-s",
        str(script),
        base,
    ]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


# Issue 5's target for each of these endpoints, with PostgreSQL on this 2-core machine.
TARGET_RATE = 1000  # requests/s
TARGET_P99_MS = 50.0
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * UNITS_MS[unit]


def summarise(name: str, output: str, load: tuple[float, float]) -> str:
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    rate = float(rate_match[1]) if rate_match else 0.0
    pcts = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    met = rate >= TARGET_RATE and "99" in pcts and milliseconds(pcts["99"]) < TARGET_P99_MS and not errors
    return (
        f"{name:24} {rate:8.0f} req/s   p50 {pcts.get('50', '?'):>8}  "
        f"p90 {pcts.get('90', '?'):>8}  p99 {pcts.get('99', '?'):>8}   {'met' if met else 'NOT MET':7}  "
        f"load {load[0]:.2f}->{load[1]:.2f}   non-2xx/3xx: {errors[1] if errors else 0}"
        f"{'   socket errors: ' + socket_errors[1] if socket_errors else ''}"
    )


def _measure(base: str, unsubscribe_tokens: list[str], track_tokens: list[str], args: argparse.Namespace) -> list[str]:
    """Run wrk against each endpoint in turn; one summary line each."""
    results: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as scratch:
        files = {"unsubscribe": Path(scratch) / "unsubscribe.txt", "track": Path(scratch) / "track.txt"}
        files["unsubscribe"].write_text("\n".join(unsubscribe_tokens) + "\n")
        files["track"].write_text("\n".join(track_tokens) + "\n")
        for name, (kind, body) in REQUESTS.items():
            script = Path(scratch) / f"{kind}-{len(results)}.lua"
            script.write_text(LUA.replace("%s", body))
            before = os.getloadavg()[0]
            output = run_wrk(base, script, args, TOKENS=str(files[kind]))
            print(output, flush=True)
            results.append(summarise(name, output, (before, os.getloadavg()[0])))
    return results


def _recorded(url: str) -> str:
    """What the endpoints wrote, to see that the requests did their work."""
    with make_engine(url).connect() as conn:
        counts = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM subscriptions WHERE status = :unsubscribed), "
                "(SELECT count(*) FROM events WHERE type = :open), "
                "(SELECT count(*) FROM events WHERE type = :click)"
            ),
            {
                "unsubscribed": SubscriptionStatus.unsubscribed.value,
                "open": EventType.open.value,
                "click": EventType.click.value,
            },
        ).one()
    return f"recorded: {counts[0]} unsubscribes, {counts[1]} opens, {counts[2]} clicks"


def load_options(parser: argparse.ArgumentParser, *, connections: int, duration: int, per: str) -> None:
    """The server and wrk options every HTTP benchmark takes: --workers, --threads, --connections, --duration."""
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=connections, help="wrk connections")
    parser.add_argument("--duration", type=int, default=duration, help=f"seconds per {per}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_options(parser, connections=32, duration=15, per="endpoint")
    parser.add_argument("--subscribers", type=int, default=60_000, help="distinct tokens (one per request)")
    args = parser.parse_args()

    with bench_database(DATABASE) as url:
        print(f"seeding {args.subscribers} subscribers and deliveries ...", flush=True)
        unsubscribe_tokens, track_tokens = seed(url, args.subscribers)
        with serving(url, args.workers) as (base, command):
            results = _measure(base, unsubscribe_tokens, track_tokens, args)
        print(
            f"\n$ {' '.join(command)}\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, one distinct "
            f"token per request, {os.cpu_count()} CPUs; target: >= {TARGET_RATE} req/s and p99 < "
            f"{TARGET_P99_MS:.0f} ms per endpoint; load = 1-minute load average before -> after the endpoint's run"
        )
        print("\n".join(results))
        print(_recorded(url))


@contextmanager
def bench_database(name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for a web benchmark (its URL), dropped afterwards."""
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def serve_env(url: str, base: str, **settings: str) -> dict[str, str]:
    """The environment of a benchmarked `newsletter serve`: production mode on `url`, answering as `base`, with
    `settings` as NEWSLETTER_* variables."""
    return {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_ENVIRONMENT": "production",
        "NEWSLETTER_BASE_URL": base,
        **{f"NEWSLETTER_{key.upper()}": value for key, value in settings.items()},
    }


@contextmanager
def serving(url: str, workers: int, **settings: str) -> Iterator[tuple[str, list[str]]]:
    """`newsletter serve --workers N` in production mode on a free port, on `url` with `settings` (as
    NEWSLETTER_* variables); gives its base URL and command line, stops it afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(url, base, **settings)
    env.pop("NEWSLETTER_BROKER_URL", None)
    newsletter = Path(sys.executable).with_name("newsletter")
    command = [str(newsletter), "serve", "--port", str(port), "--workers", str(workers)]
    if os.environ.get("BENCH_SERVE"):  # e.g. to compare a plain uvicorn command line
        command = os.environ["BENCH_SERVE"].replace("{port}", str(port)).split()
    print("$", " ".join(command), flush=True)
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(base)
        yield base, command
    finally:
        server.terminate()
        server.wait(60)  # workers finish their requests first on a loaded machine


if __name__ == "__main__":
    main()
