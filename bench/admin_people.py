"""The admin's people pages on a million subscribers, and a million-row import through the wizard.

Usage (PostgreSQL on 127.0.0.1, wrk installed; run by `python -m bench`, not by `make test`):

    .venv/bin/python -m bench.admin_people [--subscribers 1000000] [--rows 1000000] [--duration 10]

1. Seeds a scratch database with set-based SQL (subscribers with a `city` attribute, one list), prints
   EXPLAIN ANALYZE of the search's queries (address prefix, name prefix, attribute = value, the list's
   confirmed) and measures with wrk, through bench.web.run_wrk against `newsletter serve`, the p95 of the
   subscriber search and of a subscriber's page. Target: < 100 ms each.
2. Writes a CSV of `--rows` new people, uploads it to /admin/imports as a browser does, starts the import
   and polls its progress page until it finishes, sampling the web process's RSS. Targets: ≤ 60 s from
   the upload to the report, RSS ≤ 150 MB.
3. With `--cli-import`: the same file through `newsletter subscribers import everyone FILE --confirmed`
   into a database seeded the same way, by this checkout's CLI and, side by side, by each
   `--baseline-cli PATH` given (another checkout's `.venv/bin/newsletter`: the code before a change).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import Engine, text

from bench.admin import PASSWORD, SECRET, sign_in
from bench.delivery import free_port, scratch_database, seed, session_scope_for
from bench.web import run_wrk, wait_until_up
from newsletter import users
from newsletter.db import make_engine
from newsletter.models import Role

TARGET_PAGE_MS = 100.0
TARGET_IMPORT_S = 60.0
TARGET_RSS_MB = 150.0
LUA = """
wrk.method = "GET"
wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE")
local paths = {}
for p in string.gmatch(os.getenv("BENCH_PATHS"), "[^ ]+") do paths[#paths + 1] = p end
local n = 0
request = function() n = n + 1; return wrk.format(nil, paths[(n % #paths) + 1]) end
function done(summary, latency, requests)
  io.write(string.format("P95_US %d\\nP50_US %d\\nREQUESTS %d\\n", latency:percentile(95), latency:percentile(50),
    summary.requests))
end
"""
EXPLAINED = {
    "address prefix": "SELECT id FROM subscribers WHERE email LIKE 'everyone.4242%' ORDER BY id LIMIT 26",
    "name prefix": "SELECT id FROM subscribers WHERE lower(name) LIKE 'reader 4242%' ORDER BY id LIMIT 26",
    "attribute": 'SELECT id FROM subscribers WHERE attributes @> \'{"city": "City 7"}\' ORDER BY id LIMIT 26',
    "rare attribute": 'SELECT id FROM subscribers WHERE attributes @> \'{"city": "Nowhere"}\' ORDER BY id LIMIT 26',
}


def build(engine: Engine, subscribers: int) -> None:
    started = time.monotonic()
    seed(engine, "everyone", subscribers)
    with engine.begin() as conn:
        conn.execute(text("UPDATE subscribers SET attributes = jsonb_build_object('city', 'City ' || (id % 50))"))
        conn.execute(text("ANALYZE subscribers"))
    print(f"seeded {subscribers:,} subscribers with attributes in {time.monotonic() - started:.1f}s", flush=True)


def explain(engine: Engine) -> None:
    with engine.connect() as conn:
        for name, query in EXPLAINED.items():
            plan = [row[0] for row in conn.execute(text("EXPLAIN ANALYZE " + query))]
            print(f"--- {name}: {query}\n    " + "\n    ".join(plan), flush=True)


def wrk_p95(base: str, paths: list[str], cookie: str, args: argparse.Namespace) -> tuple[float, float, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    try:
        output = run_wrk(base, Path(script.name), args, BENCH_COOKIE=cookie, BENCH_PATHS=" ".join(paths))
    finally:
        os.unlink(script.name)
    figures = dict(re.findall(r"^(P95_US|P50_US|REQUESTS) (\d+)$", output, re.MULTILINE))
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise AssertionError(f"errors under wrk:\n{output}")
    return int(figures["P50_US"]) / 1000, int(figures["P95_US"]) / 1000, int(figures["REQUESTS"]) / args.duration


def serve(url: str, port: int) -> subprocess.Popen[bytes]:
    """`newsletter serve` with one worker: the process that answers is the one whose memory counts."""
    env = {**os.environ, "NEWSLETTER_DATABASE_URL": url, "NEWSLETTER_SECRET_KEY": SECRET,
           "NEWSLETTER_ENVIRONMENT": "production", "NEWSLETTER_BASE_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    env.pop("NEWSLETTER_BROKER_URL", None)
    command = [str(Path(sys.executable).with_name("newsletter")), "serve", "--port", str(port), "--workers", "1"]
    print("$", " ".join(command), flush=True)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) / 1024 if match else 0.0


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,city,plan\n")
        for i in range(rows):
            out.write(f"new{i}@example{i % 997}.com,New Reader {i},City {i % 50},{'pro' if i % 3 else 'free'}\n")


# long: the wizard's three requests and the poll, timed in the order a browser makes them
def import_through_the_wizard(base: str, cookie: str, pid: int, rows: int) -> list[str]:
    peak = [rss_mb(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak.append(rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(base_url=base, headers={"Cookie": cookie}) as client:
        path = Path(tmp) / "million.csv"
        write_csv(path, rows)
        token = re.search(r'name="csrf_token" value="([^"]*)"', client.get("/admin/imports").text)
        assert token is not None
        sampler.start()
        started = time.monotonic()
        with path.open("rb") as file:
            upload = client.post("/admin/imports", data={"csrf_token": token[1]},
                                 files={"file": ("million.csv", file, "text/csv")}, timeout=300)  # fmt: skip
        job = upload.headers["location"]
        uploaded = time.monotonic() - started
        client.post(job + "/run", data={"csrf_token": token[1], "list": "everyone", "consent": "confirmed"})
        queued = time.monotonic() - started
        polls = 0
        while "Report" not in (page := client.get(job).text) and "stopped" not in page:
            polls += 1
            time.sleep(1)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
    imported = re.search(r"<dt>Imported</dt><dd>([\d,]+)", page)
    seconds_ok = elapsed <= TARGET_IMPORT_S
    rss_ok = max(peak) <= TARGET_RSS_MB
    return [
        f"import of {rows:,} rows through the wizard: {elapsed:.1f} s from the upload to the report "
        f"(upload {uploaded:.1f} s, started at {queued:.1f} s, {polls} polls)  "
        f"{'met' if seconds_ok else 'NOT MET'} (≤ {TARGET_IMPORT_S:.0f} s); "
        f"imported {imported[1] if imported else '?'}",
        f"web process RSS: {peak[0]:.0f} MB before, peak {max(peak):.0f} MB  "
        f"{'met' if rss_ok else 'NOT MET'} (≤ {TARGET_RSS_MB:.0f} MB)",
    ]


def cli_import(cli: str, subscribers: int, rows: int) -> str:
    """The CLI import of the wizard's file into a freshly seeded database, timed from the command's start."""
    with scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url)
        build(engine, subscribers)
        engine.dispose()
        path = Path(tmp) / "million.csv"
        write_csv(path, rows)
        env = {**os.environ, "NEWSLETTER_DATABASE_URL": url, "NEWSLETTER_SECRET_KEY": SECRET}
        env.pop("NEWSLETTER_BROKER_URL", None)
        started = time.monotonic()
        done = subprocess.run([cli, "subscribers", "import", "everyone", str(path), "--confirmed", "--json"],
                              env=env, capture_output=True, text=True, check=True)  # fmt: skip
        elapsed = time.monotonic() - started
    imported = re.search(r'"imported": (\d+)', done.stdout)
    return (
        f"CLI import of {rows:,} rows ({cli}): {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s); "
        f"imported {int(imported[1]):,}"
        if imported
        else f"imported ? ({done.stdout[:200]!r})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the CSV imported through the wizard")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per page")
    parser.add_argument("--connections", type=int, default=1, help="wrk connections (one server worker)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cli-import", action="store_true", help="also time the CLI import of the same file")
    parser.add_argument("--baseline-cli", action="append", default=[], metavar="PATH",
                        help="with --cli-import: another `newsletter` to time beside it (repeatable)")  # fmt: skip
    parser.add_argument("--skip-pages", action="store_true", help="only the import parts (no seeded page timings)")
    parser.add_argument("--cli-only", action="store_true", help="only part 3 (implies --cli-import)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    lines = [] if args.cli_only else pages_and_wizard(args)
    if args.cli_import or args.cli_only:
        for cli in [str(Path(sys.executable).with_name("newsletter")), *args.baseline_cli]:
            lines.append(cli_import(cli, args.subscribers, args.rows))
            print(lines[-1], flush=True)
    print(f"\nload average at the start: {load:.1f} (2 cores, shared); at the end: {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))


def pages_and_wizard(args: argparse.Namespace) -> list[str]:
    """Parts 1 and 2: the search and a subscriber's page under wrk, then the wizard's import."""
    with scratch_database() as url:
        engine = make_engine(url)
        build(engine, args.subscribers)
        explain(engine)
        with session_scope_for(engine) as session:
            users.create_user(session, "bench", Role.admin, password=PASSWORD)
        with engine.connect() as conn:
            some = [row[0] for row in conn.execute(text("SELECT id FROM subscribers ORDER BY random() LIMIT 50"))]
        engine.dispose()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = serve(url, port)
        try:
            wait_until_up(base, timeout=180)  # a loaded machine starts it slowly
            cookie = sign_in(base, "bench", PASSWORD)
            lines: list[str] = []
            searches = ["/admin/subscribers?email=everyone.4242", "/admin/subscribers?name=reader%2012345",
                        "/admin/subscribers?attribute=city%3DCity%207&list=everyone",
                        "/admin/subscribers?status=confirmed&list=everyone", "/admin/subscribers"]  # fmt: skip
            for name, paths in (
                ()
                if args.skip_pages
                else (
                    ("subscriber search", searches),
                    ("subscriber page", [f"/admin/subscribers/{i}" for i in some]),
                )
            ):
                p50, p95, rate = wrk_p95(base, paths, cookie, args)
                met = "met" if p95 < TARGET_PAGE_MS else "NOT MET"
                lines.append(
                    f"{name:18} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  {met} (< {TARGET_PAGE_MS:.0f} ms)  "
                    f"{rate:5.0f} req/s"
                )
                print(lines[-1], flush=True)
            lines += import_through_the_wizard(base, cookie, server.pid, args.rows)
        finally:
            server.terminate()
            server.wait(20)
    return lines


if __name__ == "__main__":
    main()
