"""Benchmark: import a generated 1,000,000-row CSV into a fresh PostgreSQL database; prints time and peak RSS.

Run: `.venv/bin/python -m bench.import_bench [--rows N] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]`
The CSV is written to a temporary file first (not timed) and streamed from disk by the import.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from newsletter import imports, lists
from newsletter.db import make_engine
from newsletter.migrate import upgrade

DEFAULT_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,city,plan\n")
        for i in range(rows):
            out.write(f"reader{i}@example{i % 997}.com,Reader {i},City {i % 50},{'pro' if i % 3 else 'free'}\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=DEFAULT_ADMIN_URL, help="An admin URL; a scratch database is created.")
    args = parser.parse_args()

    admin = make_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    name = f"newsletter_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin.url).set(database=name)
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        upgrade(engine)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "subscribers.csv"
            write_csv(path, args.rows)
            size_mb = path.stat().st_size / 1e6
            rss_before = peak_rss_mb()
            with Session(engine) as session:
                lists.create_list(session, slug="bench", name="Bench", from_email="news@example.org")
                started = time.perf_counter()
                with path.open("rb") as stream:
                    report = imports.import_csv(session, "bench", stream, confirmed=True)
                session.commit()
                elapsed = time.perf_counter() - started
        print(f"rows: {args.rows:,} ({size_mb:.0f} MB CSV) on PostgreSQL")
        print(f"imported {report.imported:,}, updated {report.updated:,}, skipped {report.skipped:,}, "
              f"errors {report.error_count:,}")  # fmt: skip
        print(f"time: {elapsed:.1f} s ({args.rows / elapsed:,.0f} rows/s)")
        print(f"peak RSS: {peak_rss_mb():.0f} MB (before the import: {rss_before:.0f} MB)")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
