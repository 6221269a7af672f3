"""The digest commands as a person runs them: `python -m newsletter ...` in a subprocess, on a fresh SQLite file.

Every bad input must exit non-zero with one line on stderr that names the problem, and store nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.db import make_engine
from newsletter.migrate import upgrade
from newsletter.models import Campaign, Digest, Template
from newsletter.rendering import TEMPLATES_DIR
from tests.conftest import TEST_SECRET
from tests.factories import SAMPLE_DIGEST

BAD = Path(__file__).parent / "digests" / "bad"
SAMPLE_SLUG = "2025-04-26-foreign-media-on-kazakhstan"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def run(database: str, tmp_path: Path) -> Run:
    return make_runner(database, tmp_path)


def make_runner(database: str, tmp_path: Path) -> Run:
    """`python -m newsletter ARGS` on `database`, run from `tmp_path`, with this suite's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=database,
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_OUTBOX_DIR=str(tmp_path / "outbox"),
        NEWSLETTER_BASE_URL="https://news.example.org",
    )

    def invoke(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            env={**env, **overrides},
            cwd=tmp_path,  # commands run from any directory
            capture_output=True,
            text=True,
            timeout=120,
        )

    return invoke


def count(database: str, table: type) -> int:
    engine = make_engine(database)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(table)) or 0
    finally:
        engine.dispose()


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_DIGESTS = {
    "missing-title.md": ["missing-title.md: title: is required"],
    "no-headline.yaml": ["item 1: headline: is required"],
    "no-url.yaml": ['item 1 (headline "A"): url: is required'],
    "javascript-url.md": ['item 3 at line 12 (headline "Foo"): url: must be an absolute http(s) URL', "javascript:"],
    "bad-date.json": ["date: expected a date like 2025-04-26, got '2025-02-30'"],
    # Issue 11 item 8: these two were Python tracebacks (PyYAML builds the date), the third a database error.
    "bad-date.yaml": ["bad-date.yaml: date: expected a date like 2025-04-26, got '2025-13-45'"],
    "bad-date.md": ["bad-date.md: date: expected a date like 2025-04-26, got '2025-02-30'"],
    "long-headline.yaml": ["item 1", "headline", "at most 500 characters"],
    "invalid-syntax.yaml": ["invalid YAML at line 6, column 9"],
    "invalid-syntax.json": ["invalid JSON at line 5, column 22"],
    "empty-items.yaml": ["items: a digest needs at least one item"],
}


@pytest.mark.parametrize("name", list(BAD_DIGESTS))
def test_bad_digest_is_refused_with_one_line_and_nothing_stored(run: Run, database: str, name: str) -> None:
    assert_refused(run("digests", "publish", str(BAD / name)), *BAD_DIGESTS[name])
    assert count(database, Digest) == 0


def test_duplicate_slug_with_different_content_is_refused(run: Run, database: str, tmp_path: Path) -> None:
    first = run("digests", "publish", str(SAMPLE_DIGEST))
    assert first.returncode == 0, first.stderr
    assert first.stdout == SAMPLE_SLUG + "\n"
    assert run("digests", "publish", str(SAMPLE_DIGEST)).returncode == 0  # the same content again: a no-op
    changed = tmp_path / "changed.md"
    changed.write_text(SAMPLE_DIGEST.read_text().replace("Tokayev", "Tokaev"), encoding="utf-8")
    assert_refused(
        run("digests", "publish", str(changed)),
        f"slug {SAMPLE_SLUG!r} is already taken by a digest with different content",
    )
    assert count(database, Digest) == 1


BAD_TEMPLATES = {
    "syntax": ("<mjml>\n{% for s in sections %}\n{{ s.name }\n</mjml>\n", ["line 3: syntax error"]),
    "mro": ("<mjml>\n{{ ''.__class__.__mro__ }}\n</mjml>\n", ["line 2: not allowed in a template", "__class__"]),
    "globals": ("<mjml>{{ cycler.__init__.__globals__ }}</mjml>\n", ["not allowed in a template", "__init__"]),
    "loop": (
        "<mjml>{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}</mjml>",
        ["more than 2 s of CPU"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_TEMPLATES))
def test_bad_template_is_refused_with_one_line_and_nothing_stored(
    run: Run, database: str, tmp_path: Path, case: str
) -> None:
    source, needles = BAD_TEMPLATES[case]
    path = tmp_path / f"{case}.mjml"
    path.write_text(source, encoding="utf-8")
    assert_refused(run("templates", "add", case, str(path)), f"{path}: template {case!r}: ", *needles)
    assert count(database, Template) == 0


def test_template_add_and_list(run: Run, database: str) -> None:
    result = run("templates", "add", "copy", str(TEMPLATES_DIR / "email" / "digest" / "body.mjml"))
    assert result.returncode == 0, result.stderr
    listed = json.loads(run("templates", "list", "--json").stdout)
    assert [row["name"] for row in listed] == ["copy"]


def test_preview_check_and_test_send(run: Run, database: str, tmp_path: Path) -> None:
    assert run("digests", "publish", str(SAMPLE_DIGEST)).returncode == 0
    assert_refused(run("digests", "preview", SAMPLE_SLUG), "no mailing list yet")
    created = run("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    assert created.returncode == 0, created.stderr

    html = run("digests", "preview", SAMPLE_SLUG)
    assert html.returncode == 0 and html.stdout.startswith("<!doctype html>") and "Sample Reader" in html.stdout
    text = run("digests", "preview", SAMPLE_SLUG, "--text", "-o", str(tmp_path / "p.txt"), "--list", "weekly")
    assert text.returncode == 0 and text.stdout == ""
    assert "Hello Sample Reader," in (tmp_path / "p.txt").read_text()

    # the list has no postal address: an error, so the check and the send both refuse
    check = run("digests", "check", SAMPLE_SLUG, "--json", "--no-spamassassin")
    assert check.returncode == 1
    report = json.loads(check.stdout)
    assert report["ok"] is False and any("no postal address" in f["message"] for f in report["findings"])
    assert_refused(check, f"1 problem(s) must be fixed before digest {SAMPLE_SLUG!r} can be sent")
    assert_refused(run("campaigns", "send", SAMPLE_SLUG, "--list", "weekly"), "fails the pre-send check")
    assert_refused(
        run("campaigns", "send", SAMPLE_SLUG, "--list", "weekly", "--template", "nope"), "no template named 'nope'"
    )
    assert count(database, Campaign) == 0

    sent = run("campaigns", "test", SAMPLE_SLUG, "--to", "editor@example.com")
    assert sent.returncode == 0, sent.stderr
    assert "to editor@example.com via the outbox directory" in sent.stdout
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    assert eml.read_bytes().startswith(b"X-Newsletter-Test: yes\r\n")
    assert_refused(run("campaigns", "test", SAMPLE_SLUG, "--to", "nobody"), "--to 'nobody': ")
    assert_refused(
        run("campaigns", "test", SAMPLE_SLUG, "--to", "a@example.com", NEWSLETTER_SMTP_URL="smtp://127.0.0.1:1"),
        "not sent: no SMTP server reachable: smtp://127.0.0.1:1",
    )
    assert count(database, Campaign) == 0
