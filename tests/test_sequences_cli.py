"""`newsletter sequences` run for real in a subprocess: set up, turn on, status, errors that change nothing."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from newsletter.cli import main
from newsletter.config import get_settings
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.postgres


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class InProcessCli:
    """`newsletter ...` run through its real entry point (`main`, with its error mapping) in this process:
    a subprocess per command costs seconds on a busy machine, and tests/test_cli.py covers the wrapper."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def run(self, *args: str, ok: bool = True, stdin: str = "") -> Result:
        self.monkeypatch.setattr(sys, "argv", ["newsletter", *args])
        self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = self.capsys.readouterr()
        if ok:
            assert code == 0, (args, out, err)
        else:
            assert code != 0, (args, out)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err
        return Result(code, out, err)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def cli(committed_pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", committed_pg)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("NEWSLETTER_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.delenv("NEWSLETTER_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield InProcessCli(monkeypatch, capsys)
    get_settings.cache_clear()


def test_a_sequence_is_set_up_turned_on_and_reported_from_the_cli(cli: InProcessCli, tmp_path: Path) -> None:
    cli.run("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    cli.run("sequences", "create", "weekly")
    cli.run("sequences", "steps", "add", "weekly", "--subject", "Welcome", "--body", "-", stdin="Hello **there**.")
    follow_up = tmp_path / "second.md"
    follow_up.write_text("A week in.", encoding="utf-8")
    cli.run("sequences", "steps", "add", "weekly", "--subject", "Week one", "--body", str(follow_up), "--delay", "7d")

    refused = cli.run(
        "sequences", "steps", "add", "weekly", "--subject", "Bad", "--body", str(follow_up), "--delay", "soon", ok=False
    )
    assert "delay" in refused.stderr and "3d" in refused.stderr
    assert cli.run("sequences", "enable", "nosuchlist", ok=False).stderr.startswith("error: no list")

    on = cli.run("sequences", "enable", "weekly")
    assert "confirmed before" in on.stdout and "imported" in on.stdout  # says what turning on does not do
    shown = cli.json("sequences", "show", "weekly")
    assert shown["enabled"] is True
    assert [(s["position"], s["subject"], s["delay_hours"]) for s in shown["steps"]] == [
        (1, "Welcome", 0),
        (2, "Week one", 168),
    ]
    cli.run("sequences", "steps", "move", "weekly", "2", "1")
    edited = cli.run("sequences", "steps", "edit", "weekly", "1", "--subject", "Week one, again")
    assert "not sent again" in edited.stderr
    status = cli.json("sequences", "status", "weekly")
    assert [(s["position"], s["subject"], s["state"], s["counts"]["sent"]) for s in status] == [
        (1, "Week one, again", "sending", 0),
        (2, "Welcome", "sending", 0),
    ]
    cli.run("sequences", "disable", "weekly")
    assert {s["state"] for s in cli.json("sequences", "status", "weekly")} == {"paused"}
    assert cli.json("sequences", "list") == [
        {
            "list": "weekly",
            "enabled": False,
            "enabled_at": shown["enabled_at"],
            "steps": [
                {
                    "position": 1,
                    "delay_hours": 168,
                    "subject": "Week one, again",
                    "campaign_id": status[0]["campaign_id"],
                },
                {"position": 2, "delay_hours": 0, "subject": "Welcome", "campaign_id": status[1]["campaign_id"]},
            ],
        }
    ]


def test_deleting_a_list_says_its_sequence_goes_with_it(cli: InProcessCli) -> None:
    cli.run("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    cli.run("sequences", "create", "weekly")
    cli.run("sequences", "steps", "add", "weekly", "--subject", "Welcome", "--body", "-", stdin="Hello.")
    cli.run("sequences", "enable", "weekly")
    (step,) = cli.json("sequences", "status", "weekly")
    deleted = cli.run("lists", "delete", "weekly")
    assert "deleted list weekly: 0 subscription(s) and its welcome sequence (1 step(s)" in deleted.stdout
    assert cli.json("sequences", "list") == []
    assert "no campaign" in cli.run("campaigns", "status", str(step["campaign_id"]), ok=False).stderr
    assert cli.run("lists", "delete", "weekly", ok=False).stderr.startswith("error: no list")
