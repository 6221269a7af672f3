"""Outgoing webhooks against a real local receiver: signed once per event, retried with backoff, the
endpoint disabled after a day of failures, redelivery, and the addresses it refuses (both backends)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from newsletter import outbox
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.errors import Conflict
from newsletter.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from newsletter.webhooks import destinations, dispatch, endpoints
from tests.webhookreceiver import Receiver, verify


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhooks_allow_private": True, "webhook_timeout_seconds": 2})


def _endpoint(sessions: sessionmaker[Session], settings: Settings, url: str, types: list[str]) -> WebhookEndpoint:
    with sessions() as session, session.begin():
        return endpoints.create(session, settings, url, types)


def _emit(sessions: sessionmaker[Session], type_: str, payload: dict[str, object]) -> int:
    with sessions() as session, session.begin():
        event = outbox.emit(session, type_, payload)
        session.flush()
        return event.id


def _log(sessions: sessionmaker[Session], endpoint_id: int) -> list[WebhookDelivery]:
    with sessions() as session:
        return list(reversed(dispatch.log_of(session, endpoint_id)))


def test_each_event_type_is_delivered_once_signed(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["*"])
    ids = {type_: _emit(sessions, type_, {"n": i}) for i, type_ in enumerate(outbox.EVENT_TYPES)}
    report = dispatch.dispatch(sessions, hook_settings)
    assert (report.fanned_out, report.succeeded, report.failed) == (len(ids), len(ids), 0)
    assert dispatch.dispatch(sessions, hook_settings).succeeded == 0  # nothing twice
    got = {json.loads(r.body)["type"]: r for r in receiver.requests}
    assert sorted(got) == sorted(outbox.EVENT_TYPES) and len(receiver.requests) == len(ids)
    for type_, request in got.items():
        assert verify(endpoint.secret, request.headers, request.body), type_
        assert request.headers["webhook-id"] == f"evt_{ids[type_]}"
        assert abs(int(request.headers["webhook-timestamp"]) - utcnow().timestamp()) < 30
        assert request.headers["content-type"] == "application/json"
        # what a receiver using the package does, too (it also checks the timestamp is fresh)
        assert Webhook(endpoint.secret).verify(request.body, request.headers)["data"] == {
            "n": outbox.EVENT_TYPES.index(type_)
        }
    assert not verify(endpoints.new_secret(), request.headers, request.body)  # another key does not verify
    rows = _log(sessions, endpoint.id)
    assert {(r.status, r.response_code, r.attempt) for r in rows} == {(WebhookDeliveryStatus.succeeded, 204, 1)}


def test_endpoints_get_only_the_types_they_chose(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    _endpoint(sessions, hook_settings, receiver.url, ["campaign.finished"])
    _emit(sessions, "subscriber.subscribed", {})
    _emit(sessions, "campaign.finished", {"campaign": {"id": 7}})
    dispatch.dispatch(sessions, hook_settings)
    assert [json.loads(r.body)["data"] for r in receiver.requests] == [{"campaign": {"id": 7}}]


def test_failures_are_retried_with_backoff_then_the_endpoint_is_disabled(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    receiver.default = 500
    receiver.reply_body = b"database on fire " * 100
    clock = Clock()
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["subscriber.confirmed"])
    event_id = _emit(sessions, "subscriber.confirmed", {"n": 1})
    start = clock.now
    settings = hook_settings.model_copy(update={"webhook_retry_base_seconds": 600})  # fewer rounds to a day
    for round_ in range(30):
        dispatch.dispatch(sessions, settings, now=clock)
        rows = _log(sessions, endpoint.id)
        if rows[-1].status != WebhookDeliveryStatus.pending:
            break
        clock.now = rows[-1].next_attempt_at  # move the clock to the next retry
        if round_ < 2:  # ... and not a second earlier
            dispatch.dispatch(sessions, settings, now=lambda: clock.now - dt.timedelta(seconds=1))
            assert _log(sessions, endpoint.id)[-1].status == WebhookDeliveryStatus.pending
    rows = _log(sessions, endpoint.id)
    assert len(receiver.requests) == len(rows) >= 8
    assert {r.headers["webhook-id"] for r in receiver.requests} == {f"evt_{event_id}"}
    assert [r.attempt for r in rows] == list(range(1, len(rows) + 1))
    assert [r.status for r in rows] == [WebhookDeliveryStatus.failed] * (len(rows) - 1) + [
        WebhookDeliveryStatus.exhausted
    ]
    assert {r.response_code for r in rows} == {500}
    assert all(len(r.response_excerpt or "") <= dispatch.EXCERPT_BYTES for r in rows)
    sent_at = [r.claimed_at for r in rows]
    delays = [(b - a).total_seconds() for a, b in itertools.pairwise(sent_at)]  # type: ignore[operator]
    assert delays[:-1] == sorted(delays[:-1]) and 480 <= delays[0] <= 720 and max(delays) <= 6 * 3600
    assert sent_at[-1] - start == dt.timedelta(hours=24)  # type: ignore[operator]  # the last try: a day on
    with sessions() as session:
        stored = session.get(WebhookEndpoint, endpoint.id)
        assert stored is not None and not stored.enabled
        assert "every attempt failed since" in (stored.disabled_reason or "") and "HTTP 500" in (
            stored.disabled_reason or ""
        )
    # a disabled endpoint gets nothing more
    _emit(sessions, "subscriber.confirmed", {"n": 2})
    before = len(receiver.requests)
    dispatch.dispatch(sessions, settings, now=clock)
    assert len(receiver.requests) == before


def test_one_bad_event_does_not_disable_an_endpoint_that_takes_others(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.started"])
    _emit(sessions, "campaign.started", {"n": 1})
    receiver.answers = [500]
    dispatch.dispatch(sessions, hook_settings, now=clock)  # fails
    _emit(sessions, "campaign.started", {"n": 2})
    dispatch.dispatch(sessions, hook_settings, now=clock)  # the second event gets through
    receiver.default = 422
    clock.now += dt.timedelta(hours=25)
    dispatch.dispatch(sessions, hook_settings, now=clock)
    statuses = [(r.attempt, r.status) for r in _log(sessions, endpoint.id)]
    assert statuses == [
        (1, WebhookDeliveryStatus.failed),
        (2, WebhookDeliveryStatus.exhausted),  # the first event, tried again a day on, gave up
        (1, WebhookDeliveryStatus.succeeded),  # the second one
    ]
    with sessions() as session:
        assert session.get(WebhookEndpoint, endpoint.id).enabled  # type: ignore[union-attr]


def test_redirects_are_not_followed(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.paused"])
    receiver.answers = [302]
    _emit(sessions, "campaign.paused", {})
    dispatch.dispatch(sessions, hook_settings)
    (first, retry) = _log(sessions, endpoint.id)
    assert (first.status, first.response_code, retry.status) == (
        WebhookDeliveryStatus.failed,
        302,
        WebhookDeliveryStatus.pending,
    )
    assert "redirects are not followed" in (first.error or "")
    assert len(receiver.requests) == 1


def test_redeliver_sends_the_same_event_again_once(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["subscriber.unsubscribed"])
    _emit(sessions, "subscriber.unsubscribed", {"source": "one-click"})
    dispatch.dispatch(sessions, hook_settings)
    (first,) = _log(sessions, endpoint.id)
    receiver.answers = [503]
    with sessions() as session, session.begin():
        again = dispatch.redeliver(session, first.id)
    assert (again.attempt, again.manual) == (2, True)
    dispatch.dispatch(sessions, hook_settings)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [f"evt_{first.event_id}"] * 2
    assert receiver.requests[0].body == receiver.requests[1].body
    # a failed redelivery is one attempt: no retries, the endpoint stays on
    rows = _log(sessions, endpoint.id)
    assert [(r.attempt, r.status) for r in rows] == [
        (1, WebhookDeliveryStatus.succeeded),
        (2, WebhookDeliveryStatus.failed),
    ]
    with sessions() as session, session.begin():
        endpoints.disable(session, endpoint.id)
    with sessions() as session, pytest.raises(Conflict, match="enable it first"):
        dispatch.redeliver(session, first.id)


def test_a_rotated_secret_signs_the_next_attempt(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.started"])
    with sessions() as session, session.begin():
        rotated = endpoints.rotate_secret(session, endpoint.id).secret
    assert rotated != endpoint.secret and rotated.startswith("whsec_")
    _emit(sessions, "campaign.started", {})
    dispatch.dispatch(sessions, hook_settings)
    (request,) = receiver.requests
    assert verify(rotated, request.headers, request.body) and not verify(endpoint.secret, request.headers, request.body)


def test_a_crashed_dispatchers_attempts_are_sent_again(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.started"])
    _emit(sessions, "campaign.started", {})
    with sessions() as session, session.begin():
        dispatch.fan_out(session, now=clock.now)
        (claimed,) = dispatch.claim(session, now=clock.now)  # ... and the process died here
    dispatch.dispatch(sessions, hook_settings, now=clock)
    assert receiver.requests == []  # its lease has not run out
    clock.now += dt.timedelta(minutes=5)
    dispatch.dispatch(sessions, hook_settings, now=clock)
    assert len(receiver.requests) == 1
    assert [r.status for r in _log(sessions, endpoint.id)] == [WebhookDeliveryStatus.succeeded]
    assert claimed.endpoint_id == endpoint.id


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("https://[::1]:8443/hook", "::1 is a loopback address"),
        ("https://[::ffff:127.0.0.1]/hook", "a loopback address"),
        ("https://localhost/hook", "localhost resolves to"),
        ("https://224.0.0.1/hook", "a multicast address"),
        ("http://93.184.215.14/hook", "must use https://"),
        ("ftp://example.org/hook", "must start with https://"),
        ("https://user:pw@93.184.215.14/hook", "no user name or password"),
    ],
)
def test_private_and_plain_http_urls_are_refused_and_nothing_is_stored(
    session: Session, settings: Settings, url: str, why: str
) -> None:
    with pytest.raises(destinations.RefusedDestination) as refused:
        endpoints.create(session, settings, url, ["*"])
    assert why in str(refused.value)
    assert session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def test_bad_event_types_are_refused_with_their_names(session: Session, settings: Settings) -> None:
    with pytest.raises(endpoints.InvalidEventTypes, match=r"subscriber\.exploded"):
        endpoints.create(session, settings, "https://93.184.215.14/hook", ["subscriber.exploded", "campaign.started"])
    with pytest.raises(endpoints.InvalidEventTypes, match="at least one"):
        endpoints.create(session, settings, "https://93.184.215.14/hook", [" "])
    assert session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def test_the_address_is_checked_again_when_sending(
    sessions: sessionmaker[Session], hook_settings: Settings, settings: Settings, receiver: Receiver
) -> None:
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.finished"])
    _emit(sessions, "campaign.finished", {})
    strict = settings.model_copy(update={"webhooks_allow_private": False})
    dispatch.dispatch(sessions, strict)  # the name now resolves to loopback: DNS rebinding
    assert receiver.requests == []
    first = _log(sessions, endpoint.id)[0]
    assert first.status == WebhookDeliveryStatus.failed
    assert "127.0.0.1 is a loopback address" in (first.error or "")


def test_an_oversized_event_fails_without_being_sent(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.started"])
    _emit(sessions, "campaign.started", {"blob": "x" * 70_000})
    dispatch.dispatch(sessions, hook_settings)
    assert receiver.requests == []
    ((status, error),) = [(r.status, r.error) for r in _log(sessions, endpoint.id)]
    assert status == WebhookDeliveryStatus.failed and "MAX_PAYLOAD_BYTES" in (error or "")


def test_refusal_covers_every_kind_of_non_public_address() -> None:
    import ipaddress

    public: Callable[[str], bool] = lambda a: destinations.refusal(ipaddress.ip_address(a)) is None  # noqa: E731
    assert public("93.184.215.14") and public("2606:4700::1111")
    for address in ("0.0.0.0", "100.64.0.1", "192.168.1.1", "172.16.0.1", "fe80::1", "fc00::1", "240.0.0.1"):
        assert not public(address), address


def test_sent_events_and_their_log_are_deleted_after_the_retention(
    sessions: sessionmaker[Session], hook_settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    endpoint = _endpoint(sessions, hook_settings, receiver.url, ["campaign.started"])
    _emit(sessions, "campaign.started", {"n": 1})
    receiver.answers = [204, 500]
    _emit(sessions, "campaign.started", {"n": 2})
    dispatch.dispatch(sessions, hook_settings, now=clock)  # one delivered, one failed with a retry pending
    clock.now += dt.timedelta(days=31)
    receiver.default = 500
    with sessions() as session, session.begin():
        assert dispatch.prune(session, hook_settings, now=clock.now) == 1  # not the one still being retried
    with sessions() as session:
        assert {r.attempt for r in dispatch.log_of(session, endpoint.id)} == {1, 2}
        assert outbox.undispatched_count(session) == 0
