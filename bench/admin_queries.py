"""Queries and CPU per request of admin pages, one request at a time through the ASGI app in this process.

Run by bench/admin.py as a script (`python bench/admin_queries.py URL NAME PASSWORD TOKEN RUNS PATH...`), so
that `newsletter` is imported from PYTHONPATH when one is given: the same measurement of another checkout
(the baseline) on the same database. Prints one JSON object: path -> queries, SQL ms and CPU ms per
request after one warm-up request: the median of RUNS requests for queries and SQL time, the minimum for
CPU (the figure least inflated by other processes on a loaded machine; it includes the test client's share).
"""

from __future__ import annotations

import html
import json
import re
import statistics
import sys
import time
import warnings
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from newsletter.config import load_settings
from newsletter.web import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET = "bench-secret-key-0123456789abcdef-admin"  # noqa: S105 - the scratch database's, as bench/admin.py


class Statements:
    """Counts the statements the app runs and their time (wall, client side)."""

    def __init__(self) -> None:
        self.count = 0
        self.ms = 0.0
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, *_: Any) -> None:
        self.count += 1
        self.ms += (time.perf_counter() - conn.info.pop("bench_started")) * 1000


def sign_in(client: TestClient, name: str, password: str) -> None:
    form = client.get("/admin/sign-in").text
    token = re.search(r'name="csrf_token" value="([^"]*)"', form)
    assert token is not None, "the sign-in page has no CSRF token"
    answer = client.post(
        "/admin/sign-in",
        data={"name": name, "password": password, "csrf_token": html.unescape(token[1])},
        follow_redirects=False,
    )
    assert answer.status_code == 303, f"sign-in failed: {answer.status_code}"


def measure(client: TestClient, statements: Statements, path: str, runs: int, token: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else {}
    client.get(path, headers=headers)  # warm-up: compiled templates, prepared statements
    queries, sql, cpu = [], [], []
    for _ in range(runs):
        statements.count, statements.ms = 0, 0.0
        started = time.process_time()
        answer = client.get(path, headers=headers)
        cpu.append((time.process_time() - started) * 1000)
        assert answer.status_code == 200, f"{path}: {answer.status_code}"
        queries.append(statements.count)
        sql.append(statements.ms)
    return {"queries": statistics.median(queries), "sql_ms": statistics.median(sql), "cpu_ms": min(cpu)}


def run() -> None:
    url, name, password, token, runs, *paths = sys.argv[1:]
    settings = load_settings(
        database_url=url, secret_key=SECRET, base_url="http://testserver", environment="production"
    )
    statements = Statements()
    with TestClient(create_app(settings)) as client:
        sign_in(client, name, password)
        found = {path: measure(client, statements, path, int(runs), token) for path in paths}
    print(json.dumps(found))


if __name__ == "__main__":
    run()
