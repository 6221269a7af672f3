"""The `newsletter` command run for real in a subprocess against PostgreSQL: output, --json and exit codes."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import TEST_SECRET
from tests.factories import SAMPLE_DIGEST

pytestmark = pytest.mark.postgres


class Cli:
    def __init__(self, database_url: str, cwd: Path) -> None:
        self.env = {
            **os.environ,
            "NEWSLETTER_DATABASE_URL": database_url,
            "NEWSLETTER_SECRET_KEY": TEST_SECRET,
            "NEWSLETTER_OUTBOX_DIR": str(cwd / "outbox"),
        }
        self.env.pop("NEWSLETTER_BROKER_URL", None)
        self.cwd = cwd
        self.database_url = database_url

    def run(self, *args: str, ok: bool = True, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            input=stdin,
            env={**self.env, **env},
            cwd=self.cwd,  # commands run from any directory
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        else:
            assert result.returncode != 0, (args, result.stdout)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def sql(self, query: str) -> Any:
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(query))
                return result.scalar() if result.returns_rows else None
        finally:
            engine.dispose()


@pytest.fixture
def cli(committed_pg: str, tmp_path: Path) -> Cli:
    return Cli(committed_pg, tmp_path)


def test_users_tokens_and_roles(cli: Cli) -> None:
    created = cli.run("users", "create", "alice", "--role", "admin", "--no-password")
    token = created.stdout.strip()
    assert token.startswith("nl_") and "only this once" in created.stderr
    assert cli.sql(f"SELECT count(*) FROM api_tokens WHERE token_hash = '{token}'") == 0
    editor = cli.json("users", "create", "ed", "--role", "editor", "--no-password")
    assert editor["role"] == "editor" and editor["token"].startswith(editor["prefix"])
    listed = {u["name"]: u for u in cli.json("users", "list")}
    assert listed["alice"]["tokens"][0]["prefix"] == token[:12]
    assert listed["alice"]["signs_in"] is False and "API only" in cli.run("users", "list").stdout
    rotated = cli.json("users", "rotate", "alice")
    assert [t["prefix"] for t in cli.json("users", "list")[0]["tokens"]] == [rotated["prefix"]]
    assert "revoked 1" in cli.run("users", "revoke", rotated["prefix"]).stdout
    cli.run("users", "revoke", rotated["prefix"], ok=False)
    cli.run("users", "create", "bob", "--role", "owner", "--no-password", ok=False)
    failed = cli.run("users", "create", "ed", "--role", "admin", "--no-password", ok=False)
    assert "already exists" in failed.stderr


def test_new_lists_take_tracking_from_the_setting_unless_told(cli: Cli) -> None:
    base = ("--name", "N", "--from-email", "news@example.org")
    cli.run("lists", "create", "quiet", *base, NEWSLETTER_TRACK_DEFAULT="false")
    cli.run("lists", "create", "loud", *base, "--tracking", NEWSLETTER_TRACK_DEFAULT="false")
    cli.run("lists", "create", "usual", *base)
    assert {row["slug"]: row["tracking"] for row in cli.json("lists", "list")} == {
        "quiet": False,
        "loud": True,
        "usual": True,
    }


def test_a_reserved_slug_is_refused_with_one_line(cli: Cli) -> None:
    failed = cli.run("lists", "create", "new", "--name", "N", "--from-email", "news@example.org", ok=False)
    assert "reserved for the admin's pages" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert cli.json("lists", "list") == []


def test_users_passwords_from_stdin_and_set_password(cli: Cli) -> None:
    created = cli.run("users", "create", "ada", "--role", "admin", "--email", "Ada@Example.org", "--password-stdin",
                      stdin="correct horse battery\n")  # fmt: skip
    assert created.stdout.strip().startswith("nl_")  # the API token, still printed once
    assert cli.sql("SELECT password_hash FROM users WHERE name = 'ada'").startswith("$argon2id$")
    assert cli.sql("SELECT email FROM users WHERE name = 'ada'") == "ada@example.org"
    listed = cli.json("users", "list")[0]
    assert (listed["name"], listed["email"], listed["signs_in"]) == ("ada", "ada@example.org", True)
    assert "password" in cli.run("users", "list").stdout
    short = cli.run("users", "create", "bo", "--role", "editor", "--password-stdin", stdin="short\n", ok=False)
    assert "too short" in short.stderr and "at least 10" in short.stderr
    same = cli.run("users", "create", "bo.the.editor", "--role", "editor", "--password-stdin",
                   stdin="bo.the.editor\n", ok=False)  # fmt: skip
    assert "must not be the user name" in same.stderr
    no_tty = cli.run("users", "create", "cy", "--role", "editor", ok=False)
    assert "--password-stdin" in no_tty.stderr and "--no-password" in no_tty.stderr
    both = cli.run("users", "create", "cy", "--role", "editor", "--password-stdin", "--no-password", ok=False)
    assert "choose one" in both.stderr
    assert cli.sql("SELECT count(*) FROM users") == 1  # nothing else was created
    cli.sql(
        "INSERT INTO web_sessions (user_id, id_hash, created_at, last_seen_at) "
        "SELECT id, 'h1', now(), now() FROM users WHERE name = 'ada'"
    )
    before = cli.sql("SELECT password_hash FROM users WHERE name = 'ada'")
    weak = cli.run("users", "set-password", "ada", "--password-stdin", stdin="ada\n", ok=False)
    assert "too short" in weak.stderr
    assert cli.sql("SELECT password_hash FROM users WHERE name = 'ada'") == before
    assert cli.sql("SELECT count(*) FROM web_sessions WHERE revoked_at IS NULL") == 1
    changed = cli.run("users", "set-password", "ada", "--password-stdin", stdin="a whole new password\n")
    assert "1 signed-in session(s) ended" in changed.stdout
    assert cli.sql("SELECT password_hash FROM users WHERE name = 'ada'") != before
    assert cli.sql("SELECT count(*) FROM web_sessions WHERE revoked_at IS NULL") == 0
    unknown = cli.run("users", "set-password", "nobody", "--password-stdin", stdin="a whole new password\n", ok=False)
    assert "no user named 'nobody'" in unknown.stderr


def on_terminal(cli: Cli, args: list[str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run `newsletter ARGS` on a pseudo-terminal, typing each answer once its prompt shows; returns the
    exit status and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, as in a shell
        os.chdir(cli.cwd)
        os.execve(sys.executable, [sys.executable, "-m", "newsletter", *args], cli.env)  # noqa: S606 - no shell wanted
    shown, pending, deadline = b"", list(answers), time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        # Click writes "Password for x:", then getpass writes " " once it has switched echo off and
        # flushed the terminal's input: answer only after that space, or the answer is thrown away.
        if pending and shown.endswith(pending[0][0].encode() + b": "):
            os.write(fd, pending.pop(0)[1].encode() + b"\n")
    else:
        os.kill(pid, signal.SIGKILL)  # stuck: fail the test instead of hanging the run
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_users_create_asks_for_the_password_twice_without_echo(cli: Cli) -> None:
    code, shown = on_terminal(
        cli, ["users", "create", "tty", "--role", "editor"],
        [("Password for tty", "typed on a terminal"), ("Same password again", "typed on a terminal")],
    )  # fmt: skip
    assert code == 0, shown
    assert "typed on a terminal" not in shown  # hidden input
    before = cli.sql("SELECT password_hash FROM users WHERE name = 'tty'")
    assert before.startswith("$argon2id$")
    code, shown = on_terminal(
        cli, ["users", "set-password", "tty"],
        [("Password for tty", "a second password"), ("Same password again", "not the same one")],
    )  # fmt: skip
    assert code != 0 and "the two passwords differ: nothing was changed" in shown
    assert cli.sql("SELECT password_hash FROM users WHERE name = 'tty'") == before


def test_lists_import_export_and_subscribers(cli: Cli, tmp_path: Path) -> None:
    assert cli.json("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")["slug"]
    cli.run("lists", "create", "weekly", "--name", "Again", "--from-email", "news@example.org", ok=False)
    bad_theme = cli.run("lists", "update", "weekly", "--theme", '{"accent_color": "red"}', ok=False)
    assert "accent_color" in bad_theme.stderr
    updated = cli.json("lists", "update", "weekly", "--theme", '{"accent_color": "#1a5fb4"}', "--opt-in", "single")
    assert updated["theme"] == {"accent_color": "#1a5fb4"} and updated["opt_in"] == "single"

    source = tmp_path / "people.csv"
    source.write_bytes(
        b"email;name;city\nana@example.com;Ana;Almaty\nbroken;X;Y\n"
        b'eve@example.com;"=HYPERLINK(""http://x"")";Astana\nana@example.com;;Capital\n'
    )
    report = cli.json("subscribers", "import", "weekly", str(source), "--confirmed")
    assert report["imported"] == 2 and report["updated"] == 0 and report["skipped"] == 1
    assert report["errors"] == [{"line": 3, "reason": "email 'broken': An email address must have an @-sign."}]
    human = cli.run("subscribers", "import", "weekly", str(source))
    assert "updated 2" in human.stdout and "line 3:" in human.stdout
    strict = cli.run("subscribers", "import", "weekly", str(source), "--strict", ok=False)
    assert "refused the whole file" in strict.stderr and "line 3" in strict.stderr
    missing = tmp_path / "missing.csv"
    missing.write_text("name\nAna\n")
    assert "no 'email' column" in cli.run("subscribers", "import", "weekly", str(missing), ok=False).stderr
    cli.run("subscribers", "import", "nosuchlist", str(source), ok=False)

    exported = tmp_path / "out.csv"
    cli.run("subscribers", "export", "weekly", "-o", str(exported))
    text_out = exported.read_text()
    assert text_out.splitlines()[0] == "email,name,status,city"
    assert "'=HYPERLINK" in text_out and "ana@example.com,Ana,confirmed,Capital" in text_out
    assert cli.run("subscribers", "export", "weekly").stdout == text_out

    cli.run("lists", "create", "copy", "--name", "Copy", "--from-email", "news@example.org")
    again = cli.json("subscribers", "import", "copy", str(exported), "--confirmed")
    assert again["imported"] == 2 and again["errors"] == []
    assert cli.run("subscribers", "export", "copy").stdout == text_out

    listed = {row["slug"]: row for row in cli.json("lists", "list")}
    assert listed["weekly"]["confirmed"] == 2
    found = cli.json("subscribers", "search", "--attribute", "city:Capital")
    assert [s["email"] for s in found["items"]] == ["ana@example.com"]
    cli.run("subscribers", "block", "ana@example.com")
    assert cli.json("subscribers", "search", "--status", "blocklisted")["items"][0]["email"] == "ana@example.com"
    assert "unsubscribed from 2" in cli.run("subscribers", "unsubscribe", "eve@example.com").stdout
    cli.run("subscribers", "block", "nobody@example.com", ok=False)
    exported_gdpr = json.loads(cli.run("subscribers", "gdpr-export", "eve@example.com").stdout)
    assert exported_gdpr["subscriber"]["email"] == "eve@example.com"
    cli.run("subscribers", "erase", "eve@example.com", "--yes")
    assert cli.sql("SELECT count(*) FROM subscribers WHERE email = 'eve@example.com'") == 0
    assert cli.sql("SELECT reason FROM suppressions WHERE email IS NULL") == "erased"
    cli.run("subscribers", "delete", "ana@example.com")


def test_suppressions(cli: Cli, tmp_path: Path) -> None:
    assert cli.json("suppressions", "add", "spam@example.com")["added"] == 1
    many = tmp_path / "bounces.csv"
    many.write_text("email\nspam@example.com\nother@example.com\nnot-an-address\n")
    bulk = cli.json("suppressions", "add", "--file", str(many))
    assert (bulk["added"], bulk["already"]) == (1, 1) and bulk["errors"][0]["line"] == 4
    assert {s["email"] for s in cli.json("suppressions", "list")} == {"spam@example.com", "other@example.com"}
    cli.run("suppressions", "remove", "spam@example.com")
    cli.run("suppressions", "remove", "spam@example.com", ok=False)
    cli.run("suppressions", "add", ok=False)


HYPERLINK = "\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\"  # an OSC 8 terminal hyperlink around "x"
MARKUP = "[red]x[/red]"
LINK_MARKUP = "[link=http://evil]y[/link]"


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_stored_values_print_as_text_never_as_markup_or_escape_sequences(cli: Cli, terminal: bool) -> None:
    cli.run("subscribers", "add", "osc@example.com", "--name", HYPERLINK)
    cli.run("subscribers", "add", "red@example.com", "--name", MARKUP)
    cli.run("subscribers", "add", "link@example.com", "--name", LINK_MARKUP)
    cli.run("suppressions", "add", "spam@example.com", "--detail", HYPERLINK + MARKUP)
    cli.run("suppressions", "add", "ham@example.com", "--detail", LINK_MARKUP)
    # FORCE_COLOR: Rich styles as on a terminal, where markup and escape sequences would take effect
    env = {"FORCE_COLOR": "1", "COLUMNS": "250"} if terminal else {"COLUMNS": "250"}
    for command in (("subscribers", "search"), ("suppressions", "list")):
        shown = cli.run(*command, **env).stdout
        # ours: the bold table header when styling; nothing else may reach the terminal as a sequence
        ours = shown.replace("\x1b[1m", "").replace("\x1b[0m", "")
        assert "\x1b" not in ours and "\x9b" not in ours and "\x9d" not in ours, (command, ours)
        assert ("\x1b[1m" in shown) == terminal
        assert MARKUP in shown and LINK_MARKUP in shown, (command, shown)
        assert "]8;;http://evil\\x]8;;\\" in shown, (command, shown)  # the text that was around the ESCs
    # names are stored without their control characters (issue 11, item 7); the rest is kept byte for byte
    names = {s["email"]: s["name"] for s in cli.json("subscribers", "search")["items"]}
    assert names == {
        "osc@example.com": HYPERLINK.replace("\x1b", ""),
        "red@example.com": MARKUP,
        "link@example.com": LINK_MARKUP,
    }
    details = {s["email"]: s["detail"] for s in cli.json("suppressions", "list")}
    assert details == {"spam@example.com": HYPERLINK + MARKUP, "ham@example.com": LINK_MARKUP}


def test_campaign_status_deliveries_and_resend(cli: Cli) -> None:
    cli.run("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org", "--single-opt-in")
    cli.run("subscribers", "add", "ana@example.com", "--list", "weekly", "--confirmed")
    slug = cli.run("digests", "publish", str(SAMPLE_DIGEST)).stdout.strip()
    campaign = cli.sql(
        "WITH c AS (INSERT INTO campaigns (digest_id, subject, status, recipient_count, created_at, updated_at) "
        f"SELECT id, 'Hello', 'finished', 1, now(), now() FROM digests WHERE slug = '{slug}' RETURNING id) "
        "SELECT id FROM c"
    )
    cli.sql(f"INSERT INTO campaign_lists (campaign_id, list_id) SELECT {campaign}, id FROM mailing_lists")
    cli.sql(
        f"WITH d AS (INSERT INTO deliveries (campaign_id, subscriber_id, list_id, status, attempts, created_at) "
        f"SELECT {campaign}, s.id, l.id, 'failed', 5, now() FROM subscribers s, mailing_lists l RETURNING id) "
        "SELECT count(*) FROM d"
    )
    status = cli.json("campaigns", "status", str(campaign))
    assert status["id"] == campaign and status["status"] == "finished"
    assert status["counts"] == {"pending": 0, "sending": 0, "sent": 0, "failed": 1, "unknown": 0, "skipped": 0}
    assert "failed: 1" in cli.run("campaigns", "status", str(campaign)).stdout
    failed = cli.json("campaigns", "deliveries", str(campaign), "--status", "failed")
    assert [d["email"] for d in failed["items"]] == ["ana@example.com"]
    cli.run("campaigns", "resend", str(campaign), "--status", "sent", ok=False)
    cli.run("campaigns", "resend", str(campaign), "--status", "bogus", ok=False)
    cli.run("campaigns", "status", "999999", ok=False)
    cli.run("lists", "delete", "weekly", ok=False)
    assert cli.json("campaigns", "list")[0]["id"] == campaign


def test_subscribers_add_sends_the_confirmation_and_export_filters_by_status(cli: Cli) -> None:
    """Issue 11 items 13 and 14 (CLI side)."""
    cli.run("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    outbox = cli.cwd / "outbox"

    def sent() -> list[str]:
        return sorted(p.read_text(errors="replace") for p in outbox.glob("*.eml")) if outbox.exists() else []

    added = cli.json("subscribers", "add", "ana@example.com", "--list", "weekly")
    assert added["lists"] == {"weekly": "pending"} and added["confirmations_sent"] == 1
    [mail] = sent()
    assert "To: ana@example.com" in mail and "/confirm/" in mail.replace("=\n", "")
    # again, within the resend window: no second email
    again = cli.json("subscribers", "add", "ana@example.com", "--list", "weekly")
    assert again["lists"] == {"weekly": "pending"} and again["confirmations_sent"] == 0
    assert len(sent()) == 1
    confirmed = cli.json("subscribers", "add", "bo@example.com", "--list", "weekly", "--confirmed")
    assert confirmed["lists"] == {"weekly": "confirmed"} and confirmed["confirmations_sent"] == 0
    assert len(sent()) == 1

    assert cli.run("subscribers", "export", "weekly").stdout.splitlines() == [
        "email,name,status",
        "bo@example.com,,confirmed",
    ]
    pending = cli.run("subscribers", "export", "weekly", "--status", "pending").stdout.splitlines()
    assert pending == ["email,name,status", "ana@example.com,,pending"]
    everyone = cli.run("subscribers", "export", "weekly", "--status", "all").stdout.splitlines()
    assert sorted(everyone[1:]) == ["ana@example.com,,pending", "bo@example.com,,confirmed"]
    wrong = cli.run("subscribers", "export", "weekly", "--status", "bogus", ok=False)
    assert "must be one of confirmed, pending, unsubscribed, all" in wrong.stderr and wrong.stdout == ""
    assert len(sent()) == 1


def test_json_for_people_escapes_the_controls_a_terminal_would_obey() -> None:
    from newsletter.cli.console import readable_json

    value = {"user_agent": "Mozilla\x9b2J\x1b]0;owned\x07", "name": "Айгерим Ødegård"}
    text_out = readable_json(value)
    assert json.loads(text_out) == value  # still the same JSON
    assert not any(("\x00" <= c <= "\x1f" and c != "\n") or "\x7f" <= c <= "\x9f" for c in text_out)
    assert "Айгерим Ødegård" in text_out  # letters stay readable
