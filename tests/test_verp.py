"""VERP: with VERP_ADDRESS set every message leaves with its own signed return path,
bounces+<token>@domain, and a bounce that quotes nothing of the message is matched by the address it
came back to (the envelope recipient postfix passes, or Delivered-To / To); both backends, the CLI too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import bounces, delivery, lists
from newsletter.config import ConfigError, Settings
from newsletter.db import make_engine
from newsletter.delivery import sending
from newsletter.mailer import SMTPMailer
from newsletter.models import Delivery, DeliveryStatus, Role, Subscriber, Suppression
from newsletter.tokens import TokenPurpose, Tokens
from newsletter.verp import delivery_of, return_path
from tests.admin import AdminWeb, csrf_from
from tests.factories import make_list
from tests.smtpserver import RecordingSMTPServer
from tests.test_bounces import send_sample, state
from tests.test_delivery_pipeline import planned

VERP = "bounces@news.example.org"

# A bounce as qmail-style and some Exchange relays send it: a DSN that quotes none of the message.
BARE_DSN = """\
Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.com
To: {to}
Subject: failure notice
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

Sorry, I could not deliver your message to the address below.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {final}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{final}>: no such user

--b1--
"""


@pytest.fixture
def verp_settings(make_settings: Callable[..., Settings], engine: Engine) -> Settings:
    return make_settings(database_url=engine.url.render_as_string(hide_password=False), verp_address=VERP)


def bare_dsn(to: str, final: str) -> bytes:
    return BARE_DSN.format(to=to, final=final).encode()


def test_each_message_leaves_with_its_own_signed_return_path(
    sessions: sessionmaker[Session], session: Session, verp_settings: Settings, smtp_server: RecordingSMTPServer
) -> None:
    campaign_id, batch = planned(session, verp_settings, 3)
    mailer = SMTPMailer(smtp_server.url)
    sending.send_batch(sessions, verp_settings, mailer, campaign_id, batch.first_id, batch.last_id)
    received = smtp_server.wait_for(3)
    session.expire_all()
    rows = {
        email: delivery_id
        for email, delivery_id in session.execute(select(Subscriber.email, Delivery.id).join(Delivery))
    }
    tokens = Tokens.from_settings(verp_settings)
    for message in received:
        local, _, domain = message.envelope_from.partition("@")
        assert domain == "news.example.org" and local.startswith("bounces+") and local == local.lower()
        assert delivery_of(tokens, [VERP], [message.envelope_from]) == rows[message.rcpt_tos[0]]
        assert message.message["Return-Path"] is None  # the receiving server adds it, from the envelope
    assert len({m.envelope_from for m in received}) == 3


def test_without_verp_the_return_path_is_the_lists_address(
    sessions: sessionmaker[Session], session: Session, settings: Settings, smtp_server: RecordingSMTPServer
) -> None:
    campaign_id, batch = planned(session, settings, 2)
    sending.send_batch(sessions, settings, SMTPMailer(smtp_server.url), campaign_id, batch.first_id, batch.last_id)
    campaign = delivery.get_campaign(session, campaign_id)
    assert {m.envelope_from for m in smtp_server.wait_for(2)} == {campaign.lists[0].from_email}


@pytest.mark.parametrize("where", ["envelope recipient", "Delivered-To and To", "case folded by a relay"])
def test_a_bounce_quoting_no_headers_is_matched_by_its_return_path(
    where: str, sessions: sessionmaker[Session], session: Session, verp_settings: Settings
) -> None:
    sent = send_sample(sessions, session, verp_settings)
    row = sent["r1@example.com"]
    address = return_path(Tokens.from_settings(verp_settings), VERP, row.id)
    if where == "envelope recipient":
        [outcome] = bounces.ingest(session, verp_settings, bare_dsn(VERP, "r1@example.com"), recipient=address)
    elif where == "Delivered-To and To":
        [outcome] = bounces.ingest(session, verp_settings, bare_dsn(address, "r1@example.com"))
    else:
        [outcome] = bounces.ingest(session, verp_settings, bare_dsn(VERP, "r1@example.com"), recipient=address.upper())
    session.commit()
    assert (outcome.result, outcome.delivery_id) == ("suppressed", row.id)
    session.expire_all()
    assert session.scalars(select(Suppression.email)).all() == ["r1@example.com"]
    assert session.get_one(Delivery, row.id).status == DeliveryStatus.failed


def test_forged_or_foreign_return_paths_change_nothing(
    sessions: sessionmaker[Session], session: Session, verp_settings: Settings
) -> None:
    sent = send_sample(sessions, session, verp_settings)
    tokens = Tokens.from_settings(verp_settings)
    r0, r1 = sent["r0@example.com"], sent["r1@example.com"]
    real = tokens.make_lowercase(TokenPurpose.bounce, r1.id)
    forged = f"bounces+{r1.id:x}-{real.split('-')[1][::-1]}@news.example.org"
    other_key = Tokens("another-publication-secret-key").make_lowercase(TokenPurpose.bounce, r1.id)
    cases = [
        (forged, "r1@example.com"),  # a made-up signature
        (f"bounces+{other_key}@news.example.org", "r1@example.com"),  # another installation's token
        (f"bounces+{real}@elsewhere.example", "r1@example.com"),  # our token at another domain
        (return_path(tokens, VERP, r0.id), "r1@example.com"),  # r0's return path, a bounce naming r1
        (f"bounces+{real}@news.example.org", "r1@example.com"),  # (VERP off: see below)
    ]
    before = state(session)
    for address, final in cases[:-1]:
        [outcome] = bounces.ingest(session, verp_settings, bare_dsn(VERP, final), recipient=address)
        assert outcome.result == "ignored", (address, outcome.reason)
    plain = verp_settings.model_copy(update={"verp_address": None})
    [outcome] = bounces.ingest(session, plain, bare_dsn(VERP, "r1@example.com"), recipient=cases[-1][0])
    assert outcome.result == "ignored"
    session.commit()
    assert state(session) == before


@pytest.mark.parametrize("bad", ["bounces", "bounces+x@news.example.org", "a@b@c", "@news.example.org"])
def test_verp_address_must_be_one_plain_address(bad: str, make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="VERP_ADDRESS"):
        make_settings(verp_address=bad)


def test_cli_reads_the_envelope_recipient_option(committed_pg: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(database_url=committed_pg, verp_address=VERP)
    engine = make_engine(committed_pg)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with sessions() as session:
            sent = send_sample(sessions, session, settings)
            address = return_path(Tokens.from_settings(settings), VERP, sent["r2@example.com"].id)
            env = {"NEWSLETTER_DATABASE_URL": settings.database_url, "NEWSLETTER_SECRET_KEY": settings.secret_key,
                   "NEWSLETTER_VERP_ADDRESS": VERP, "PATH": "/usr/bin:/bin"}  # fmt: skip
            command = [sys.executable, "-m", "newsletter", "bounces", "ingest", "--recipient", address]
            done = subprocess.run(
                command, input=bare_dsn(VERP, "r2@example.com"), env=env, capture_output=True, timeout=60, check=False
            )
            assert done.returncode == 0, done.stderr
            assert (
                "suppressed" in done.stdout.decode() and f"delivery {sent['r2@example.com'].id}" in done.stdout.decode()
            )
            session.expire_all()
            assert session.scalars(select(Suppression.email)).all() == ["r2@example.com"]
    finally:
        engine.dispose()


def test_return_path_shape() -> None:
    tokens = Tokens("a-secret-key-of-sixteen-chars")
    address = return_path(tokens, "Bounces@News.Example.org", 12345)
    local, _, domain = address.partition("@")
    assert domain == "News.Example.org" and local.startswith("Bounces+3039-")
    assert delivery_of(tokens, ["bounces@news.example.org"], [None, "x@y", address]) == 12345


def test_a_list_of_its_own_verp_address_is_matched_by_it_without_the_installations(
    sessions: sessionmaker[Session], session: Session, settings: Settings, smtp_server: RecordingSMTPServer
) -> None:
    assert settings.verp_address is None
    campaign_id, batch = planned(session, settings, 2)
    lists.update_list(session, "weekly", verp_address="Bounces@Lists.Example.net")
    session.commit()
    sending.send_batch(sessions, settings, SMTPMailer(smtp_server.url), campaign_id, batch.first_id, batch.last_id)
    received = smtp_server.wait_for(2)
    paths = {m.rcpt_tos[0]: m.envelope_from for m in received}
    assert all(p.startswith("bounces+") and p.endswith("@lists.example.net") for p in paths.values()), paths
    session.expire_all()
    row = session.execute(select(Delivery).join(Subscriber).where(Subscriber.email == "r1@example.com")).scalar_one()
    # a bounce quoting no headers, piped in with the envelope recipient: the list's return path names the row
    [outcome] = bounces.ingest(
        session, settings, bare_dsn("postmaster@lists.example.net", "r1@example.com"), recipient=paths["r1@example.com"]
    )
    session.commit()
    assert (outcome.result, outcome.delivery_id) == ("suppressed", row.id)
    assert session.scalars(select(Suppression.email)).all() == ["r1@example.com"]


def test_a_list_can_turn_verp_off_whatever_the_installation_says(
    sessions: sessionmaker[Session], session: Session, verp_settings: Settings, smtp_server: RecordingSMTPServer
) -> None:
    campaign_id, batch = planned(session, verp_settings, 2)
    lists.update_list(session, "weekly", verp=False)
    session.commit()
    sending.send_batch(sessions, verp_settings, SMTPMailer(smtp_server.url), campaign_id, batch.first_id, batch.last_id)
    campaign = delivery.get_campaign(session, campaign_id)
    assert {m.envelope_from for m in smtp_server.wait_for(2)} == {campaign.lists[0].from_email}


def test_the_list_form_sets_verp_and_refuses_an_address_with_a_plus(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        make_list(session, slug="weekly", name="Weekly")
    client = admin_web.signed_in(Role.admin)
    page = client.get("/admin/lists/weekly")
    assert 'name="verp" checked' in page.text and 'name="verp_address"' in page.text
    data = {"name": "Weekly", "from_email": "news@example.org", "opt_in": "double", "visibility": "public",
            "verp": "on", "csrf_token": csrf_from(page.text)}  # fmt: skip
    refused = client.post("/admin/lists/weekly", data={**data, "verp_address": "bounces+x@lists.example.net"})
    assert refused.status_code == 422 and "no +" in refused.text
    with admin_web.sessions() as session:
        assert lists.get_list(session, "weekly").verp_address is None
    done = client.post("/admin/lists/weekly", data={**data, "verp_address": "bounces@lists.example.net"})
    assert done.status_code == 303
    off = client.post("/admin/lists/weekly", data={**data, "verp": "", "verp_address": "bounces@lists.example.net"})
    assert off.status_code == 303
    with admin_web.sessions() as session:
        stored = lists.get_list(session, "weekly")
        assert (stored.verp, stored.verp_address) == (False, "bounces@lists.example.net")
