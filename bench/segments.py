"""Segment counts over 1,000,000 subscribers on PostgreSQL, beside a plain count of the list in the same run.

Loads (set-based, in the database) one list of N confirmed subscribers with attributes (city, age, a join
date as text), three finished campaigns each sent to a sample of them, and opens for a share of those, then
VACUUM ANALYZE, as autovacuum leaves a database that has been running. Each figure is the best of three runs of
`segments.count` (and of the campaign reach with the segment), so a cold first read does not decide it.

    python -m bench segments          # N = 1,000,000
    BENCH_SEGMENT_ROWS=100000 python -m bench segments
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.web import bench_database
from newsletter import segments
from newsletter.db import make_engine
from newsletter.delivery import ledger
from newsletter.migrate import upgrade

ROWS = int(os.environ.get("BENCH_SEGMENT_ROWS", "1000000"))
LIMIT_SECONDS = 1.0
CITIES = ["Almaty", "Astana", "Shymkent", "Karaganda", "Aktobe", "Taraz", "Pavlodar", "Oskemen", "Semey", "Atyrau"]
FILTERS: dict[str, Any] = {
    "attribute equals (city = Almaty)": {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}},
    "date comparison (joined < 2021-01-01)": {"attribute": {"name": "joined", "op": "lt", "value": "2021-01-01"}},
    "did not open the last 3 campaigns": {"not_opened": {"last": 3}},
    "city = Almaty and age 25-40": {
        "all": [
            {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}},
            {"attribute": {"name": "age", "op": "between", "value": [25, 40]}},
        ]
    },
}


def load(session: Session, rows: int) -> int:
    """The data, made by PostgreSQL itself (generate_series): what a CLI import would leave, minus the wait."""
    cities = "ARRAY[" + ", ".join(f"'{c}'" for c in CITIES) + "]"
    session.execute(text("ALTER TABLE deliveries DISABLE TRIGGER USER"))  # counters are not what is measured
    statements = [
        "INSERT INTO mailing_lists (slug, name, description, from_name, from_email, opt_in, visibility, "
        "postal_address, theme, tracking, form_fields, cors_origins, created_at, updated_at) VALUES ('weekly', "
        "'Weekly', '', 'The Weekly', 'news@example.org', 'double', 'public', '1 Example Street', '{}', true, "
        "'[]', '[]', now(), now())",
        f"INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, status, created_at, updated_at) "
        f"SELECT 'reader' || i || '@example.com', md5(i::text) || md5((i + 1)::text), 'example.com', "
        f"'Reader ' || i, jsonb_build_object('city', ({cities})[1 + i % {len(CITIES)}], 'age', 18 + i % 60, "
        f"'joined', to_char(date '2018-01-01' + (i % 2500), 'YYYY-MM-DD')), 'active', now(), now() "
        f"FROM generate_series(1, {rows}) AS i",
        "INSERT INTO subscriptions (subscriber_id, list_id, status, source, confirmed_at, created_at, updated_at) "
        "SELECT s.id, l.id, 'confirmed', 'import', now(), now(), now() FROM subscribers s, mailing_lists l",
        "INSERT INTO digests (slug, title, date, content_hash, published_at, updated_at) "
        "VALUES ('bench', 'Bench', date '2026-12-01', 'x', now(), now())",
    ]
    for statement in statements:
        session.execute(text(statement))
    for n in range(3):
        campaign_id = session.scalar(
            text(
                "INSERT INTO campaigns (digest_id, subject, status, started_at, finished_at, recipient_count, "
                "created_at, updated_at) SELECT id, 'Issue', 'finished', now() - make_interval(days => :d), now(), 0, "
                "now(), now() FROM digests RETURNING id"
            ),
            {"d": 30 - n},
        )
        session.execute(text("INSERT INTO campaign_lists SELECT :c, id FROM mailing_lists"), {"c": campaign_id})
        # each campaign went to 60% of the list; a quarter of its recipients opened it
        session.execute(
            text(
                "INSERT INTO deliveries (campaign_id, subscriber_id, list_id, status, attempts, sent_at, created_at) "
                "SELECT :c, s.subscriber_id, s.list_id, 'sent', 1, now(), now() FROM subscriptions s "
                "WHERE (s.subscriber_id + :c) % 5 < 3"
            ),
            {"c": campaign_id},
        )
        session.execute(
            text(
                "INSERT INTO events (type, campaign_id, delivery_id, subscriber_id, list_id, created_at) "
                "SELECT 'open', campaign_id, id, subscriber_id, list_id, now() FROM deliveries "
                "WHERE campaign_id = :c AND subscriber_id % 4 = 0"
            ),
            {"c": campaign_id},
        )
    session.execute(text("ALTER TABLE deliveries ENABLE TRIGGER USER"))
    return int(session.scalar(text("SELECT id FROM mailing_lists")) or 0)


def best_of(runs: int, work: Callable[[], int]) -> tuple[float, int]:
    times, result = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    with bench_database("bench_segments") as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            started = time.perf_counter()
            with Session(engine) as session:
                list_id = load(session, ROWS)
                session.commit()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))  # what autovacuum does to a database that has been running
            took = time.perf_counter() - started
            print(f"loaded {ROWS:,} subscribers, 3 campaigns, their ledger and opens in {took:.0f} s")
            report(engine, list_id)
        finally:
            engine.dispose()


def report(engine: Any, list_id: int) -> None:
    with Session(engine) as session:
        plain = "SELECT count(*) FROM subscriptions WHERE list_id = :l AND status = 'confirmed'"
        seconds, n = best_of(3, lambda: int(session.scalar(text(plain), {"l": list_id}) or 0))
        print(f"{'baseline: plain count of the list':<48} {n:>9,}  {seconds * 1000:7.0f} ms")
        seconds, n = best_of(3, lambda: ledger.reach(session, [list_id]))
        print(f"{'baseline: the list reach (planning selection)':<48} {n:>9,}  {seconds * 1000:7.0f} ms")
        for label, filt in FILTERS.items():
            seconds, n = best_of(3, lambda filt=filt: segments.count(session, filt))  # type: ignore[misc]
            verdict = "ok" if seconds < LIMIT_SECONDS else f"SLOWER than {LIMIT_SECONDS:g} s"
            print(f"{'segment: ' + label:<48} {n:>9,}  {seconds * 1000:7.0f} ms  {verdict}")
            seconds, n = best_of(3, lambda filt=filt: ledger.reach(session, [list_id], filt))  # type: ignore[misc]
            print(f"{'  reach: list ∩ that segment':<48} {n:>9,}  {seconds * 1000:7.0f} ms")
