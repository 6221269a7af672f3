"""The `newsletter` command in a subprocess: the embedded demo and one-line errors for bad input."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from newsletter.config import Settings
from newsletter.models import CampaignStatus, DeliveryStatus
from tests.conftest import ROOT


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_sends_once_and_says_so_the_second_time(tmp_path: Path) -> None:
    first = run(["demo"], tmp_path)
    assert first.returncode == 0, first.stderr
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 36
    recipients = set()
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert message.get_content_type() == "multipart/alternative"
        assert message["List-Unsubscribe"].startswith("<http://localhost:8000/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert b"\r\n" in path.read_bytes() and b"\n" not in path.read_bytes().replace(b"\r\n", b"")
        recipients.add(message["To"].addresses[0].domain)
    assert recipients <= {"example.com", "example.org", "example.net"}
    assert "36 sent" in first.stdout and "preview" in first.stdout and "python3 -m webbrowser" in first.stdout

    second = run(["demo"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "already sent" in second.stdout and "nobody gets a second copy" in second.stdout
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 36

    # It ends by saying how to open the admin, with a password that signs in (printed the first time only).
    told = re.search(r"open (http://127\.0\.0\.1:8000/admin) and sign in as user demo, password (\S+) ", first.stdout)
    assert told is not None, first.stdout
    assert ", password " not in second.stdout and "newsletter users set-password demo" in second.stdout
    from fastapi.testclient import TestClient

    from newsletter.config import load_settings
    from newsletter.web import create_app
    from tests.admin import sign_in

    demo_db = load_settings(database_url=f"sqlite:///{tmp_path / 'newsletter.db'}", base_url="http://127.0.0.1:8000")
    with TestClient(create_app(demo_db), base_url="http://127.0.0.1:8000") as client:
        signed_in = sign_in(client, "demo", told.group(2))
        assert signed_in.url.path == "/admin", signed_in.text[-2000:]
        assert "Campaigns" in client.get("/admin").text


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["lists", "list"],
            # a real key: outside the embedded demo the development key is refused before any connection
            {"NEWSLETTER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "NEWSLETTER_SECRET_KEY": "k" * 40},
            "cannot use the database postgresql+psycopg://nobody@127.0.0.1:1/none",
        ),
        (["lists", "list"], {"NEWSLETTER_SMTP_URL": "smtp//oops"}, "NEWSLETTER_SMTP_URL"),
        (["lists", "list"], {"NEWSLETTER_DATABASE_URL": "mysql://x/y"}, "unsupported database URL"),
        (["digests", "publish", "no-such-file.md"], {}, "no-such-file.md: no such file"),
        (["campaigns", "send", "some-digest", "--list", "nope"], {}, "no digest with slug 'some-digest'"),
        (["subscribers", "unsubscribe", "a@example.com", "--list", "nope"], {}, "no list with slug 'nope'"),
        (["campaigns", "send", "x", "--list", "a", "--at", "tomorrow"], {}, "is not an ISO 8601 time"),
        (["campaigns", "status", "999"], {}, "no campaign with id 999"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_non_zero_exit(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run(["db", "upgrade"], tmp_path, NEWSLETTER_DATABASE_URL=db).returncode == 0
    result = run(args, tmp_path, **{"NEWSLETTER_DATABASE_URL": db, **env})
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_newsletter_alone_shows_the_commands_and_no_empty_error(tmp_path: Path) -> None:
    result = run([], tmp_path)
    assert result.returncode == 2  # a usage answer, as click gives for a missing command
    assert "Commands" in result.stdout and "campaigns" in result.stdout
    assert result.stderr == ""


def test_runs_from_any_directory(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    result = run(["db", "upgrade"], tmp_path, NEWSLETTER_DATABASE_URL=f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"database at revision \d{4}\n", result.stdout) and db.exists()
    assert tmp_path != ROOT


def test_watching_a_big_campaign_polls_its_ledger_less_often(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.cli import campaigns
    from newsletter.delivery import progress

    clock = {"now": 0.0}
    sleeps: list[float] = []
    statuses = iter([CampaignStatus.sending, CampaignStatus.sending, CampaignStatus.finished])

    def fake_progress(session: object, campaign_id: int) -> progress.Progress:
        clock["now"] += 0.4  # the ledger scan of a million-row campaign
        counts = dict.fromkeys((s.value for s in DeliveryStatus), 0)
        return progress.Progress(campaign_id, next(statuses), counts, 1000.0, 60.0, None, 0, None)

    monkeypatch.setattr(progress, "campaign_progress", fake_progress)
    monkeypatch.setattr(campaigns, "unit_of_work", contextlib.nullcontext)
    monkeypatch.setattr(campaigns, "settings", lambda: make_settings(broker_url="redis://127.0.0.1:1/0"))
    monkeypatch.setattr(campaigns, "time", SimpleNamespace(monotonic=lambda: clock["now"], sleep=sleeps.append))
    campaigns.watch(7, quiet=True)
    assert sleeps == [pytest.approx(4.0), pytest.approx(4.0)]  # ten times the scan, not once a second
