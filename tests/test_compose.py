"""docker-compose.yml cannot run here (no Docker engine): check it parses and only uses what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from newsletter.cli import app as cli_app
from newsletter.config import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def test_has_every_role_with_health_checks() -> None:
    assert {"postgres", "redis", "mailpit", "migrate", "web", "worker", "beat"} <= set(SERVICES)
    for name in ("postgres", "redis", "mailpit", "web", "worker"):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def find_command(words: list[str]) -> Any:
    """The CLI command the words name (options ignored), or None."""
    command: Any = typer.main.get_command(cli_app)
    for word in words:
        if word.startswith("-"):
            break
        command = getattr(command, "commands", {}).get(word)
        if command is None:
            return None
    return command


@pytest.mark.parametrize("service", ["migrate", "web", "worker", "beat"])
def test_every_command_exists(service: str) -> None:
    command = SERVICES[service]["command"]
    program, *args = command
    if program == "newsletter":
        leaf = find_command(args)
        assert leaf is not None, command
        options = {a.split("=")[0] for a in args if a.startswith("--")}
        known = {opt for param in leaf.params for opt in param.opts}
        assert options <= known, (service, options - known)
    else:
        assert program == "celery" and args[:2] == ["-A", "worker"] and args[2] in {"worker", "beat"}
        from worker import app  # the module celery -A worker loads

        assert app.main == "newsletter"


def test_every_newsletter_variable_is_a_setting() -> None:
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "Dockerfile").read_text()
    used = set(re.findall(r"NEWSLETTER_([A-Z_]+)", text))
    fields = {name.upper() for name in Settings.model_fields}
    assert used and used <= fields, used - fields


def test_dockerfile_copies_what_the_package_needs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("newsletter", "worker", "templates", "pyproject.toml"):
        assert path in dockerfile
        assert (ROOT / path).exists()


def test_web_health_check_route_exists() -> None:
    from newsletter.web import create_app

    assert "/healthz" in SERVICES["web"]["healthcheck"]["test"][-1]
    assert "/healthz" in create_app().openapi()["paths"]


def test_app_images_share_one_build() -> None:
    for name in ("migrate", "web", "worker", "beat"):
        assert SERVICES[name]["image"] == "newsletter:latest"
        assert Path(SERVICES[name].get("build", ".")) == Path(".")
