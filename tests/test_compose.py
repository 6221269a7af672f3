"""docker-compose.yml cannot run here (no Docker engine): check it parses and only uses what exists."""

from __future__ import annotations

import importlib
import json
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


# --- issue 17: the metrics endpoints, Prometheus and its alert rules, the dashboard, the image ---------


def test_metrics_endpoints_are_wired_to_prometheus() -> None:
    web, worker = SERVICES["web"]["environment"], SERVICES["worker"]["environment"]
    assert web["NEWSLETTER_METRICS_ENABLED"] == "true"
    assert web["NEWSLETTER_METRICS_TOKEN"].startswith("${NEWSLETTER_METRICS_TOKEN:?")
    assert web["NEWSLETTER_DATABASE_URL"] == SERVICES["beat"]["environment"]["NEWSLETTER_DATABASE_URL"]  # merged
    port = worker["NEWSLETTER_WORKER_METRICS_PORT"]
    assert worker["NEWSLETTER_WORKER_METRICS_HOST"] == "0.0.0.0" and worker["PROMETHEUS_MULTIPROC_DIR"]
    assert port in SERVICES["worker"]["expose"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["newsletter-web"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["newsletter-web"]["metrics_path"] == "/metrics"
    secret = jobs["newsletter-web"]["authorization"]["credentials_file"]
    assert secret == "/run/secrets/metrics_token" and "metrics_token" in SERVICES["prometheus"]["secrets"]
    assert COMPOSE["secrets"]["metrics_token"]["environment"] == "NEWSLETTER_METRICS_TOKEN"
    assert jobs["newsletter-worker"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": int(port)}
    mounted = {volume.split(":")[0] for volume in SERVICES["prometheus"]["volumes"]}
    for path in mounted - {"prometheus"}:
        assert (ROOT / path).is_file(), path
    assert "--maxmemory-policy" in SERVICES["redis"]["command"]
    assert SERVICES["redis"]["command"][SERVICES["redis"]["command"].index("--maxmemory-policy") + 1] == "noeviction"


def test_the_image_is_multi_stage_unprivileged_and_checks_its_health() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)


def known_metric_names() -> set[str]:
    """The families a real /metrics exposition names (with every collector answering: Redis, a database)."""
    import tempfile

    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from newsletter.config import load_settings
    from newsletter.migrate import upgrade
    from newsletter.web.app import create_app
    from tests.conftest import REDIS_URL, TEST_SECRET

    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/metrics.db"
        from sqlalchemy import create_engine

        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        settings = load_settings(
            database_url=url, secret_key=TEST_SECRET, redis_url=REDIS_URL, metrics_enabled=True, metrics_token="t"
        )
        with TestClient(create_app(settings)) as client:
            text = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    return {family.name for family in text_string_to_metric_families(text)}


def referenced_metrics(expressions: list[str]) -> set[str]:
    names = set()
    for expression in expressions:
        for name in re.findall(r"\bnewsletter_[a-z_]+", expression):
            names.add(re.sub(r"_(total|bucket|count|sum)$", "", name))
    return names


@pytest.mark.redis
def test_alert_rules_and_the_dashboard_reference_metrics_that_exist() -> None:
    known = known_metric_names()
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    alerts = {rule["alert"] for rule in rules}
    # what docs/production.md promises to alert on
    assert {"NewsletterUnknownDeliveries", "NewsletterHighFailureRate", "NewsletterQueueLatency",
            "NewsletterComplaintRate"} <= alerts  # fmt: skip
    for rule in rules:
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    used = referenced_metrics([rule["expr"] for rule in rules])
    assert used and used <= known, used - known
    dashboard = json.loads((ROOT / "deploy/grafana/newsletter.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    panelled = referenced_metrics(exprs)
    assert panelled <= known, panelled - known
    assert len(panelled) >= 16  # every metric of the issue has its panel


def test_workers_consume_every_queue_the_app_routes_to() -> None:
    """The housekeeping queue exists only if workers read it: compose, systemd and the docs start them alike."""
    from newsletter import queues
    from worker import app

    importlib.import_module("worker.tasks")  # registers the tasks (alone, nothing else in this run has)
    routed = {app.amqp.router.route({}, name)["queue"].name for name in app.tasks if name.startswith("worker.")}
    assert routed == set(queues.ALL)  # the sweep and the webhook dispatcher, and the batches
    assert app.amqp.router.route({}, "worker.tasks.sweep")["queue"].name == queues.HOUSEKEEPING
    assert app.amqp.router.route({}, "worker.tasks.send_batch")["queue"].name == queues.BATCHES
    assert {entry["task"] for entry in app.conf.beat_schedule.values()} <= {
        name for name in app.tasks if app.amqp.router.route({}, name)["queue"].name == queues.HOUSEKEEPING
    }
    assert set(app.amqp.queues) == set(queues.ALL)  # what a worker started without -Q consumes
    command = SERVICES["worker"]["command"]
    assert set(command[command.index("-Q") + 1].split(",")) == set(queues.ALL)
    started = "celery -A worker worker -Q " + queues.WORKER_QUEUES
    for path in ("README.md", "docs/production.md", "deploy/systemd/newsletter-worker.service"):
        text = (ROOT / path).read_text()
        workers = re.findall(r"celery -A worker worker[^`\n#]*", text)
        assert workers and all(w.startswith(started) for w in workers), (path, workers)
