"""`newsletter webhooks`: outgoing webhook endpoints, their delivery log, redelivery."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from newsletter.cli.console import (
    AsJson,
    emit_json,
    fail,
    id_argument,
    id_option,
    note,
    print_table,
    say,
    settings,
    unit_of_work,
)
from newsletter.models import WebhookDelivery, WebhookEndpoint
from newsletter.outbox import EVENT_TYPES
from newsletter.webhooks import dispatch, endpoints

app = typer.Typer(no_args_is_help=True, help="Outgoing webhooks: endpoints that receive signed events.")

EndpointId = Annotated[int, id_argument("The endpoint's id (see `webhooks list`).")]


def endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at,
    }


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "webhook_id": dispatch.message_id(row.event_id),
        "attempt": row.attempt,
        "manual": row.manual,
        "status": row.status.value,
        "response_code": row.response_code,
        "duration_ms": row.duration_ms,
        "error": row.error,
        "response_excerpt": row.response_excerpt,
        "sent_at": row.claimed_at,
        "next_attempt_at": row.next_attempt_at,
        "created_at": row.created_at,
    }


@app.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(help="Where to POST events: an https:// URL on a public address.")],
    events: Annotated[str, typer.Option("--events", help=f"Comma-separated, or * for all: {', '.join(EVENT_TYPES)}")],
    description: Annotated[str, typer.Option(help="What it is for, shown in lists.")] = "",
    as_json: AsJson = False,
) -> None:
    """Register an endpoint; prints its signing secret, once."""
    with unit_of_work() as session:
        endpoint = endpoints.create(session, settings(), url, events.split(","), description=description)
        result = {**endpoint_json(endpoint), "secret": endpoint.secret}
    if as_json:
        emit_json(result)
        return
    say(f"webhook endpoint {result['id']}: {result['url']} ({', '.join(result['events'])})")
    say(f"signing secret (shown once, keep it): {result['secret']}")


@app.command("list")
def webhooks_list(as_json: AsJson = False) -> None:
    """Every endpoint, enabled or not."""
    with unit_of_work() as session:
        rows = [endpoint_json(e) for e in endpoints.all_endpoints(session)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        say("no webhook endpoints; add one with `newsletter webhooks create URL --events ...`")
        return
    print_table(
        ("id", "url", "events", "state"),
        (
            (
                r["id"],
                r["url"],
                ", ".join(r["events"]),
                "enabled" if r["enabled"] else f"disabled: {r['disabled_reason']}",
            )
            for r in rows
        ),
    )


@app.command("show")
def webhooks_show(endpoint_id: EndpointId, as_json: AsJson = False) -> None:
    """One endpoint (not its secret: `rotate-secret` makes a new one)."""
    with unit_of_work() as session:
        result = endpoint_json(endpoints.get(session, endpoint_id))
    if as_json:
        emit_json(result)
        return
    for key, value in result.items():
        say(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


@app.command("deliveries")
def webhooks_deliveries(
    endpoint_id: EndpointId,
    before: Annotated[int | None, id_option("Older than this delivery id (the next page).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: AsJson = False,
) -> None:
    """The endpoint's delivery log, newest first: one row per attempt."""
    with unit_of_work() as session:
        rows = [delivery_json(r) for r in dispatch.log_of(session, endpoint_id, before=before, limit=limit)]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("id", "event", "attempt", "status", "code", "ms", "sent", "error / next attempt"),
        (
            (
                r["id"],
                r["webhook_id"],
                f"{r['attempt']}{' (manual)' if r['manual'] else ''}",
                r["status"],
                r["response_code"] or "",
                r["duration_ms"] if r["duration_ms"] is not None else "",
                f"{r['sent_at']:%Y-%m-%d %H:%M:%S}" if r["sent_at"] else "",
                r["error"] or (f"next at {r['next_attempt_at']:%Y-%m-%d %H:%M:%S}" if r["next_attempt_at"] else ""),
            )
            for r in rows
        ),
    )
    if len(rows) == limit:
        say(f"older: --before {rows[-1]['id']}")


@app.command("redeliver")
def webhooks_redeliver(
    delivery_id: Annotated[int, id_argument("A delivery id from `webhooks deliveries`.")],
    as_json: AsJson = False,
) -> None:
    """Send that delivery's event to its endpoint again, once, now."""
    with unit_of_work() as session:
        new_id = dispatch.redeliver(session, delivery_id).id
    from worker import tasks  # here, not at the top: worker.app reads the settings (see cli/campaigns.py)

    tasks.dispatch_webhooks.delay()  # without a broker this sends it here and now
    with unit_of_work() as session:
        result = delivery_json(dispatch.get_delivery(session, new_id))
    if as_json:
        emit_json(result)
        return
    if result["status"] == "pending":
        say(f"delivery {new_id} queued")
    elif result["status"] == "succeeded":
        say(f"delivery {new_id}: HTTP {result['response_code']} in {result['duration_ms']} ms")
    else:
        fail(f"delivery {new_id} failed: {result['error']}")


@app.command("enable")
def webhooks_enable(endpoint_id: EndpointId) -> None:
    """Turn an endpoint back on (after fixing what made it fail)."""
    with unit_of_work() as session:
        endpoints.enable(session, endpoint_id)
    say(f"webhook endpoint {endpoint_id} enabled")


@app.command("disable")
def webhooks_disable(
    endpoint_id: EndpointId, reason: Annotated[str, typer.Option(help="Shown in the list.")] = "disabled by an admin"
) -> None:
    """Stop sending to an endpoint; events meanwhile are not kept for it."""
    with unit_of_work() as session:
        endpoints.disable(session, endpoint_id, reason)
    say(f"webhook endpoint {endpoint_id} disabled")


@app.command("delete")
def webhooks_delete(endpoint_id: EndpointId) -> None:
    """Remove an endpoint and its delivery log."""
    with unit_of_work() as session:
        endpoints.delete(session, endpoint_id)
    say(f"webhook endpoint {endpoint_id} deleted")


@app.command("rotate-secret")
def webhooks_rotate_secret(endpoint_id: EndpointId, as_json: AsJson = False) -> None:
    """A new signing secret, printed once; the old one stops working at once."""
    with unit_of_work() as session:
        secret = endpoints.rotate_secret(session, endpoint_id).secret
    if as_json:
        emit_json({"id": endpoint_id, "secret": secret})
        return
    note("the old secret no longer verifies: update the receiver now")
    say(f"signing secret (shown once, keep it): {secret}")
