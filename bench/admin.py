"""The admin's hot pages at scale: a million subscribers and a million-recipient campaign, beside a baseline.

Usage (PostgreSQL on 127.0.0.1, wrk and redis-server installed; run by `python -m bench`, not by `make test`):

    .venv/bin/python -m bench.admin [--subscribers 1000000] [--duration 10] [--connections 2] [--workers 2]
                                    [--baseline COMMIT|none]

Builds a scratch database with set-based SQL (subscribers, subscriptions, the campaign's ledger planned by
the real `delivery.start`, then 70 % of it marked sent with opens and clicks), then:

1. the progress poll's cost in the domain (`campaign_progress`, read from the counters) against one scan
   of the ledger (`tally`, what the poll cost before the counters), each timed 50 times;
2. two `newsletter serve` (2 workers each) on that database: this checkout, and the baseline commit's
   package and templates (`git archive`, on PYTHONPATH; default: main before the admin's speed work). Both
   have a private redis as broker that no worker reads, so neither sends the campaign's pending rows
   while it is measured (without a broker, serve's embedded scheduler would). One request per page
   warms each (the first dashboard view is timed: it counts the growth of the days never counted);
3. per hot page, p50/p95 in ms with wrk against each server in turn (the campaign page's poll fragment,
   the campaign page and report, its failed recipients, a ledger search, the campaigns list, the
   dashboard, the API's progress endpoint), with the CPU time per request of the server's processes and
   of its database backends (from /proc: load-independent, unlike the latencies). Targets: pages
   < 100 ms, poll < 10 ms;
4. queries and CPU per request of each page for each checkout, one request at a time through the ASGI app
   in-process (bench/admin_queries.py).
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from bench.delivery import ROOT, free_port, process, publish, scratch_database, seed, session_scope_for
from bench.web import serve_env, wait_until_up
from newsletter import delivery, users
from newsletter.config import Settings, load_settings
from newsletter.db import make_engine
from newsletter.delivery import progress
from newsletter.models import CampaignStatus, Role

SECRET = "bench-secret-key-0123456789abcdef-admin"  # noqa: S105 - a scratch database
PASSWORD = "bench password for a scratch database"  # noqa: S105
TARGET_PAGE_MS = 100.0
TARGET_POLL_MS = 10.0
BASELINE = "ee34ecb"  # main before the admin's hot pages were made fast (issue 13)

# wrk reports p50/75/90/99 only; done() prints the p95 (microseconds) for this script to read.
LUA = """
wrk.method = "GET"
if os.getenv("BENCH_COOKIE") then wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE") end
if os.getenv("BENCH_AUTHORIZATION") then wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION") end
function done(summary, latency, requests)
  io.write(string.format("P95_US %d\\nP50_US %d\\nREQUESTS %d\\nERRORS %d\\n", latency:percentile(95),
    latency:percentile(50), summary.requests, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def build(settings: Settings, engine: Engine, subscribers: int) -> int:
    """The list, its subscribers, a sending campaign to all of them (70 % sent) with opens and clicks,
    and 40 small finished campaigns for the list page. Returns the big campaign's id."""
    started = time.monotonic()
    seed(engine, "everyone", subscribers)
    digest = publish(settings)
    print(f"seeded {subscribers:,} subscribers in {time.monotonic() - started:.1f}s", flush=True)
    started = time.monotonic()
    with session_scope_for(engine) as session:
        campaign = delivery.create_campaign(session, digest_slug=digest, list_slugs=["everyone"], allow_repeat=True)
        delivery.start(session, settings, campaign.id)
        campaign_id = campaign.id
    print(f"planned the campaign ({subscribers:,} rows) in {time.monotonic() - started:.1f}s", flush=True)
    started = time.monotonic()
    with engine.begin() as conn:
        params = {"c": campaign_id, "sent": int(subscribers * 0.7)}
        first = conn.scalar(text("SELECT min(id) FROM deliveries WHERE campaign_id = :c"), params)
        params["first"] = first
        conn.execute(
            text(
                "UPDATE deliveries SET status = 'sent', attempts = 1, smtp_code = 250, "
                "sent_at = now() - ((:sent - (id - :first)) * interval '2 ms') "
                "WHERE campaign_id = :c AND id < :first + :sent"
            ),
            params,
        )
        conn.execute(
            text(
                "UPDATE deliveries SET status = CASE WHEN id % 2 = 0 THEN 'failed' ELSE 'unknown' END, "
                "attempts = 1, smtp_code = 550, smtp_text = '5.1.1 user unknown' "
                "WHERE campaign_id = :c AND id >= :first + :sent AND id < :first + :sent + 2000"
            ),
            params,
        )
        # opens by a third of those sent (some twice), clicks by a tenth, spread over the sending hours
        conn.execute(
            text(
                "INSERT INTO events (type, campaign_id, delivery_id, subscriber_id, list_id, link_id, url, created_at) "
                "SELECT 'open', d.campaign_id, d.id, d.subscriber_id, d.list_id, NULL, NULL, "
                "d.sent_at + interval '5 min' "
                "FROM deliveries d, generate_series(1, 1 + (d.id % 5 = 0)::int) "
                "WHERE d.campaign_id = :c AND d.status = 'sent' AND d.id % 3 = 0 "
                "UNION ALL "
                "SELECT 'click', d.campaign_id, d.id, d.subscriber_id, d.list_id, l.id, l.url, "
                "d.sent_at + interval '7 min' "
                "FROM deliveries d JOIN links l ON l.campaign_id = d.campaign_id AND l.position = 1 + d.id % 4 "
                "WHERE d.campaign_id = :c AND d.status = 'sent' AND d.id % 10 = 0"
            ),
            params,
        )
        conn.execute(text("ANALYZE deliveries; ANALYZE events"))
    with session_scope_for(engine) as session:
        for _ in range(40):
            small = delivery.create_campaign(session, digest_slug=digest, list_slugs=["everyone"], allow_repeat=True)
            small.status = CampaignStatus.finished
    print(f"sent 70 %, events and 40 more campaigns in {time.monotonic() - started:.1f}s", flush=True)
    return campaign_id


def timed(call: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def p95(times: list[float]) -> float:
    return times[max(0, int(len(times) * 0.95) - 1)]


def domain_poll(engine: Engine, campaign_id: int) -> list[str]:
    with session_scope_for(engine) as session:
        poll = timed(lambda: progress.campaign_progress(session, campaign_id), 50)
        scan = timed(lambda: progress.tally(session, campaign_id), 10)
        counts = progress.campaign_progress(session, campaign_id).counts
        scanned = progress.tally(session, campaign_id).counts
    if counts != scanned:
        raise AssertionError(f"the counters {counts} differ from a scan of the ledger {scanned}")
    return [
        f"poll in the domain, campaign_progress from the counters: p50 {statistics.median(poll):.2f} ms, "
        f"p95 {p95(poll):.2f} ms  ({'met' if p95(poll) < TARGET_POLL_MS else 'NOT MET'} < {TARGET_POLL_MS:.0f} ms)",
        f"one scan of the ledger (tally, the poll before the counters): p50 {statistics.median(scan):.0f} ms",
        f"counts: {counts}",
    ]


def run_wrk(base: str, path: str, env: dict[str, str], args: argparse.Namespace) -> tuple[float, float, int, int]:
    """p50 and p95 in ms, requests and errors of wrk on one path."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    command = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "10s", "-s", script.name]
    command.append(base + path)
    output = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    figures = dict(re.findall(r"^(P95_US|P50_US|REQUESTS|ERRORS) (\d+)$", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(figures["ERRORS"]) + (int(non_2xx[1]) if non_2xx else 0)
    return int(figures["P50_US"]) / 1000, int(figures["P95_US"]) / 1000, int(figures["REQUESTS"]), errors


def pages(campaign_id: int) -> list[tuple[str, str, float, str]]:
    """(name, path, p95 target in ms, how it signs in: cookie or token) of each hot page."""
    return [
        ("campaign page poll", f"/admin/campaigns/{campaign_id}/progress?was=sending", TARGET_POLL_MS, "cookie"),
        ("API progress poll", f"/api/v1/campaigns/{campaign_id}/progress", TARGET_POLL_MS, "token"),
        ("campaign page + report", f"/admin/campaigns/{campaign_id}", TARGET_PAGE_MS, "cookie"),
        ("report's failed recipients", f"/admin/campaigns/{campaign_id}?status=failed", TARGET_PAGE_MS, "cookie"),
        ("ledger search", f"/admin/campaigns/{campaign_id}?search=everyone.4242%40", TARGET_PAGE_MS, "cookie"),
        ("campaigns list", "/admin/campaigns", TARGET_PAGE_MS, "cookie"),
        ("dashboard", "/admin", TARGET_PAGE_MS, "cookie"),
    ]


def sign_in(base: str, name: str, password: str) -> str:
    """Sign in through the form as a browser does; the Cookie header of the session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base}/admin/sign-in") as form:
        token = re.search(r'name="csrf_token" value="([^"]*)"', form.read().decode())
    assert token is not None, "the sign-in page has no CSRF token"
    # then to the account page, not the dashboard: its first view is timed apart (see `warm`)
    fields = {"name": name, "password": password, "csrf_token": html.unescape(token[1]), "next": "/admin/account"}
    opener.open(f"{base}/admin/sign-in", data=urllib.parse.urlencode(fields).encode())
    return "; ".join(f"{c.name}={c.value}" for c in jar)


@dataclass
class Server:
    """A `newsletter serve` of one checkout (PYTHONPATH: another checkout's source, for the baseline)."""

    name: str
    base: str
    process: subprocess.Popen[bytes]
    pythonpath: str | None
    cookie: str = ""


def start_server(name: str, url: str, broker: str, pythonpath: str | None, args: argparse.Namespace) -> Server:
    """With a broker (a private redis no worker reads): without one, `serve` would run the embedded
    scheduler and send the campaign's pending rows while the pages are measured."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(url, base, broker_url=broker, secret_key=SECRET)
    env["PGAPPNAME"] = f"bench-admin-{name}"  # its database backends, whose CPU time is measured
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [str(Path(sys.executable).with_name("newsletter")), "serve", "--port", str(port)]
    command += ["--workers", str(args.workers)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server(name, base, process, pythonpath)


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def cpu_ms(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def server_pids(server: Server) -> list[int]:
    """The serve process and its workers."""
    pids = [server.process.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.process.pid:
            pids.append(int(stat.parent.name))
    return pids


def backend_pids(engine: Engine, server: Server) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"), {"n": f"bench-admin-{server.name}"}
        )
        return [int(pid) for (pid,) in rows]


def measure(
    servers: list[Server], engine: Engine, campaign_id: int, auth: dict[str, str], args: argparse.Namespace
) -> list[str]:
    """wrk on each page against each server in turn (so both see the same load; each first on every other
    page), with the CPU time the server's processes and its database backends spent per request."""
    lines = []
    for number, (name, path, target, how) in enumerate(pages(campaign_id)):
        for server in servers if number % 2 == 0 else servers[::-1]:  # each goes first on half the pages
            env = {"BENCH_AUTHORIZATION": auth["token"]} if how == "token" else {"BENCH_COOKIE": server.cookie}
            own, db = server_pids(server), backend_pids(engine, server)
            own_before, db_before = cpu_ms(own), cpu_ms(db)
            p50, p95_ms, requests, errors = run_wrk(server.base, path, env, args)
            db = sorted(set(db) | set(backend_pids(engine, server)))  # a pool may have opened connections
            server_cpu = (cpu_ms(own) - own_before) / max(requests, 1)
            db_cpu = (cpu_ms(db) - db_before) / max(requests, 1)
            met = p95_ms < target and not errors
            lines.append(
                f"{name:27} {server.name:8} p50 {p50:7.1f} ms  p95 {p95_ms:7.1f} ms  "
                f"{'met' if met else 'NOT MET':7} (< {target:.0f})  {requests / args.duration:6.0f} req/s  "
                f"errors {errors}  CPU/request: server {server_cpu:5.1f} ms, database {db_cpu:5.1f} ms"
            )
            print(lines[-1], flush=True)
    return lines


def queries_per_request(servers: list[Server], url: str, token: str, campaign_id: int, runs: int = 20) -> list[str]:
    """Queries, SQL time and CPU per request of each page, in-process, for each checkout."""
    paths = [path for _, path, _, _ in pages(campaign_id)]
    names = {path: name for name, path, _, _ in pages(campaign_id)}
    found = {}
    for server in servers:
        env = {**os.environ, "PYTHONPATH": server.pythonpath} if server.pythonpath else dict(os.environ)
        command = [sys.executable, str(Path(__file__).with_name("admin_queries.py")), url, "bench", PASSWORD]
        command += [token, str(runs), *paths]
        found[server.name] = json.loads(subprocess.run(command, env=env, capture_output=True, check=True).stdout)
    lines = []
    for path in paths:
        lines.append(
            f"{names[path]:27} "
            + "   ".join(
                f"{name}: {f[path]['queries']:3.0f} queries, {f[path]['cpu_ms']:5.1f} ms CPU (min)"
                for name, f in ((n, found[n]) for n in found)
            )
        )
    return lines


def baseline_source(ref: str, into: Path) -> str:
    """The package, templates and worker of commit `ref` of this repository, for PYTHONPATH (its worker too:
    a served app that enqueues imports it, and this checkout's would not match that package)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "newsletter", "templates", "worker"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


def warm(servers: list[Server], campaign_id: int, auth: dict[str, str]) -> list[str]:
    """One request per page and server before measuring; the first dashboard view is timed (it counts
    the growth of days never counted before: after an import, the first view of the day pays for it)."""
    lines = []
    for server in servers:
        for name, path, _, how in pages(campaign_id):
            header = ("Authorization", auth["token"]) if how == "token" else ("Cookie", server.cookie)
            request = urllib.request.Request(server.base + path, headers=dict([header]))  # noqa: S310 - loopback
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
                answer.read()
            if name == "dashboard":
                took = (time.perf_counter() - started) * 1000
                lines.append(f"dashboard, first view       {server.name:8} {took:7.0f} ms")
    return lines


def main() -> None:  # long: the scratch database, the servers, then each measurement in turn
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per page")
    parser.add_argument(
        "--connections",
        type=int,
        default=2,
        help="wrk connections: 2, one per server worker, so a figure is a request's own time",
    )
    parser.add_argument("--workers", type=int, default=2, help="newsletter serve worker processes")
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help=f"the commit measured beside this checkout (default {BASELINE}: before the admin's speed work); "
        "'none' for this checkout alone",
    )
    args = parser.parse_args()
    redis_port = free_port()
    redis = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    broker = f"redis://127.0.0.1:{redis_port}/0"
    with process(redis, redis_port), scratch_database() as url, tempfile.TemporaryDirectory() as source:
        settings = load_settings(database_url=url, secret_key=SECRET, base_url="http://x", environment="production")
        engine = make_engine(url)
        campaign_id = build(settings, engine, args.subscribers)
        report = domain_poll(engine, campaign_id)
        print("\n".join(report), flush=True)
        with session_scope_for(engine) as session:
            token = users.create_user(session, "bench", Role.admin, password=PASSWORD).token
        servers = [start_server("this", url, broker, None, args)]
        if args.baseline != "none":
            servers.append(start_server("baseline", url, broker, baseline_source(args.baseline, Path(source)), args))
        try:
            auth = {"token": f"Bearer {token}"}
            for server in servers:
                wait_until_up(server.base)
                server.cookie = sign_in(server.base, "bench", PASSWORD)
            report += warm(servers, campaign_id, auth)
            print("\n".join(report[-len(servers) :]), flush=True)
            report += measure(servers, engine, campaign_id, auth, args)
        finally:
            for server in servers:
                stop(server)
        report += ["", "queries and CPU per request, one at a time in-process (load-independent):"]
        report += queries_per_request(servers, url, token, campaign_id)
        engine.dispose()
    print(
        f"\n{args.subscribers:,} subscribers, a {args.subscribers:,}-recipient campaign (70 % sent); wrk -t2 "
        f"-c{args.connections} -d{args.duration}s per page against `newsletter serve --workers {args.workers}`"
        + (f"; baseline: commit {args.baseline}" if args.baseline != "none" else "")
    )
    print("\n".join(report))


if __name__ == "__main__":
    main()
