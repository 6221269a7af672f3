"""Issue 17: a fleet on separate network hosts (`make fleet-test`, outside `make test`; needs root).

Three network namespaces joined by veth links to a bridge on the database host: `nl-db` (10.231.0.1) runs
its own PostgreSQL cluster, Redis and postfix's smtp-sink; `nl-a` and `nl-b` (10.231.0.11, .12) each run a Celery
worker under its own host name (a UTS namespace), reaching those services only over their link. This
process (the operator, and beat) reaches the database host over a third link. A 20,000-recipient campaign
is sent across both; mid-send worker host A's link is cut (`ip link set down`: its TCP connections hang,
nothing is shut down cleanly) and restored after the claim lease, and the figures are printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from bench.workers import settings_env
from newsletter import delivery
from newsletter.config import Settings, load_settings
from newsletter.db import session_scope
from newsletter.migrate import upgrade
from newsletter.models import CampaignStatus, Delivery, DeliveryStatus, Subscriber
from tests.conftest import ROOT, TEST_SECRET
from tests.factories import make_list, publish_sample
from tests.processes import PG_BIN, Beat, add_subscribers, enqueue, wait_until

pytestmark = [pytest.mark.fleet]

RECIPIENTS = 20_000
LEASE_SECONDS = 15
DB, HOSTS = "nl-db", {"host-a": ("nl-a", "10.231.0.11"), "host-b": ("nl-b", "10.231.0.12")}
DB_IP, OPERATOR_IP = "10.231.0.1", "10.231.0.100"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, check=check, capture_output=True)


def netns(name: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", name, *args]


def build_network() -> None:
    teardown_network()
    for name in (DB, *(ns for ns, _ in HOSTS.values())):
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", DB, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", DB, "addr", "add", f"{DB_IP}/24", "dev", "br0")
    sh("ip", "-n", DB, "link", "set", "br0", "up")
    for peer, (ns, ip) in {"operator": ("", OPERATOR_IP), **HOSTS}.items():
        port = f"p-{peer[-1]}"  # the database host's end, on its bridge
        sh("ip", "link", "add", f"nl-{peer[-1]}", "type", "veth", "peer", "name", port)
        sh("ip", "link", "set", port, "netns", DB)
        sh("ip", "-n", DB, "link", "set", port, "master", "br0", "up")
        if ns:
            sh("ip", "link", "set", f"nl-{peer[-1]}", "netns", ns)
            sh("ip", "-n", ns, "link", "set", f"nl-{peer[-1]}", "name", "eth0")
        link = "eth0" if ns else f"nl-{peer[-1]}"
        prefix = ["ip", "-n", ns] if ns else ["ip"]
        sh(*prefix, "addr", "add", f"{ip}/24", "dev", link)
        sh(*prefix, "link", "set", link, "up")


def teardown_network() -> None:
    sh("ip", "link", "del", "nl-r", check=False)
    for name in (DB, *(ns for ns, _ in HOSTS.values())):
        sh("ip", "netns", "del", name, check=False)


def set_link(host: str, state: str) -> None:
    sh("ip", "-n", HOSTS[host][0], "link", "set", "eth0", state)


@pytest.fixture
def fleet(tmp_path: Path, output_dir: Path) -> Iterator[dict[str, object]]:
    if os.geteuid() != 0 or sh("ip", "netns", "add", "nl-probe", check=False).returncode != 0:
        pytest.skip("needs root and `ip netns` (network namespaces)")
    sh("ip", "netns", "del", "nl-probe", check=False)
    build_network()
    for old in output_dir.glob("host-*.log"):
        old.unlink()
    pg_dir = Path(tempfile.mkdtemp(prefix="newsletter-fleet-pg-"))
    shutil.chown(pg_dir, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    sink_dir = Path(tempfile.mkdtemp(prefix="newsletter-fleet-sink-"))
    shutil.chown(sink_dir, "nobody")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sh(*as_pg, str(PG_BIN / "initdb"), "-D", str(pg_dir / "data"), "-U", "postgres", "--auth=trust")
        with (pg_dir / "data" / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.231.0.0/24 trust\n")  # the fleet's own private network
        options = f"-p 5432 -k {pg_dir} -c listen_addresses={DB_IP} -c fsync=off -c max_connections=200"
        sh(*netns(DB, *as_pg, str(PG_BIN / "pg_ctl"), "-D", str(pg_dir / "data"), "-o", options,
                  "-l", str(pg_dir / "log"), "-w", "start"))  # fmt: skip
        redis = ["redis-server", "--bind", DB_IP, "--protected-mode", "no", "--save", "", "--appendonly", "no"]
        processes.append(subprocess.Popen(netns(DB, *redis), stdout=subprocess.DEVNULL))
        # postfix's smtp-sink (C, PIPELINING): it appends every transaction, envelope first, to one file
        dump = sink_dir / "mail"
        processes.append(subprocess.Popen(netns(DB, "smtp-sink", "-u", "nobody", "-D", str(dump), f"{DB_IP}:2525",
                                                 "256")))  # fmt: skip
        yield {"received": dump, "processes": processes, "log_dir": output_dir}  # the hosts' logs stay
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=20)
        sh(*netns(DB, *as_pg, str(PG_BIN / "pg_ctl"), "-D", str(pg_dir / "data"), "-m", "immediate", "stop"),
           check=False)  # fmt: skip
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(sink_dir, ignore_errors=True)
        teardown_network()


def settings_for(address: str) -> Settings:
    return load_settings(
        database_url=f"postgresql://postgres@{address}:5432/postgres",
        broker_url=f"redis://{address}:6379/0",
        smtp_url=f"smtp://{address}:2525?max_connections=8",
        secret_key=TEST_SECRET, base_url="https://news.example.org", environment="production",
        claim_lease_seconds=LEASE_SECONDS, sweep_interval_seconds=3, log_format="json",
    )  # fmt: skip


def start_worker(host: str, settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    ns, _ = HOSTS[host]
    command = (f"hostname {host} && exec {sys.executable} -m celery -A worker worker --concurrency=2 "
               f"--without-gossip --without-mingle --without-heartbeat -n worker@{host} --loglevel=INFO")  # fmt: skip
    with (log_dir / f"{host}.log").open("ab") as log:
        return subprocess.Popen(netns(ns, "unshare", "--uts", "sh", "-c", command), cwd=ROOT,
                                env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def test_a_campaign_across_two_worker_hosts_survives_a_cut_link(fleet: dict[str, object]) -> None:
    operator = settings_for(DB_IP)
    wait_until(lambda: _reachable(operator), 30, "PostgreSQL on the database host")
    engine = create_engine(operator.database_url)
    upgrade(engine)
    engine.dispose()
    with session_scope(operator) as session:
        weekly = make_list(session, slug="weekly")
        emails = add_subscribers(session, weekly, RECIPIENTS)
        digest = publish_sample(session)
        campaign_id = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id
    log_dir = Path(str(fleet["log_dir"]))
    workers = {host: start_worker(host, operator, log_dir) for host in HOSTS}
    beat = Beat(operator, interval=3)
    holders: Counter[str] = Counter()
    started = time.monotonic()
    try:
        time.sleep(5)  # both workers connected
        enqueue(operator, "worker.tasks.start_campaign", campaign_id)
        wait_until(lambda: _count(operator, campaign_id, DeliveryStatus.sent) >= RECIPIENTS // 4, 180, "a quarter")
        _sample_holders(operator, campaign_id, holders, 1.0)
        wait_until(lambda: _holding(operator, campaign_id, "host-a"), 60, "host-a to hold claimed rows", poll=0.02)
        set_link("host-a", "down")  # mid-send: host-a has a group claimed and on the wire
        cut_at = time.monotonic() - started
        sent_at_cut = _count(operator, campaign_id, DeliveryStatus.sent)
        # A's claimed group outlives its lease; the sweep (queued behind the batches B is sending) then turns
        # it unknown and re-enqueues the rest of A's ranges. Restore the link once it has, or after 150 s.
        deadline = time.monotonic() + 150
        _sample_holders(operator, campaign_id, holders, LEASE_SECONDS)
        while not _count(operator, campaign_id, DeliveryStatus.unknown) and time.monotonic() < deadline:
            _sample_holders(operator, campaign_id, holders, 1.0)
        set_link("host-a", "up")
        restored_at = time.monotonic() - started

        def finished() -> bool:
            with session_scope(operator) as session:
                return delivery.get_campaign(session, campaign_id).status == CampaignStatus.finished

        wait_until(finished, 300, "the campaign to finish", poll=1)
        seconds = time.monotonic() - started
    finally:
        beat.stop()
        killed = [host for host, process in workers.items() if not _stop(process)]
    received = recipients_received(Path(str(fleet["received"])))
    with session_scope(operator) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.claimed_by)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
    status = {email: s for email, s, _ in rows}
    unknown = {email for email, s in status.items() if s == DeliveryStatus.unknown}
    duplicates = {email for email, n in received.items() if n > 1}
    missing = [e for e in emails if status.get(e) not in (DeliveryStatus.sent, DeliveryStatus.unknown)
               or (status[e] == DeliveryStatus.sent and received[e] == 0)]  # fmt: skip
    shares = _shares_from_logs(log_dir, campaign_id)
    delivered = delivered_by_host(Path(str(fleet["received"])))
    print(
        f"\nfleet test: {RECIPIENTS} recipients, 2 worker hosts x 2 processes in network namespaces, "
        f"finished in {seconds:.1f}s; host-a's link cut at {cut_at:.1f}s ({sent_at_cut} sent), restored at "
        f"{restored_at:.1f}s. missing={len(missing)} duplicates={len(duplicates)} "
        f"(all among unknown: {duplicates <= unknown}) unknown={len(unknown)}; "
        f"ledger {dict(Counter(s.value for s in status.values()))}; received {sum(received.values())} messages; "
        f"messages per host at the sink {delivered}; sent per host in finished batches' logs {shares}; "
        f"claim holders seen in the ledger while sending {dict(holders)}; "
        f"workers that needed SIGKILL to stop: {killed or 'none'}"
    )
    assert len(status) == RECIPIENTS
    assert missing == []
    assert duplicates <= unknown
    assert set(holders) == set(HOSTS)  # the claim token names each worker's own host
    assert all(delivered.get(host, 0) > 0 for host in HOSTS)
    assert sum(delivered.values()) == sum(received.values())  # every message came from one of the two hosts
    # a batch cut short is logged by nobody: the logs count at most what was sent
    assert 0 < sum(shares.values()) <= sum(received.values())


def received_from(dump: Path, header: str) -> list[str]:
    """One value per transaction in smtp-sink's dump, which starts each with X-Client-Addr ... X-Rcpt-Args."""
    found = subprocess.run(["grep", "-a", f"^{header}: ", str(dump)], capture_output=True, check=False).stdout
    return [line.split(b": ", 1)[1].strip().decode() for line in found.splitlines()]


def recipients_received(dump: Path) -> Counter[str]:
    return Counter(value.strip("<>") for value in received_from(dump, "X-Rcpt-Args"))


def delivered_by_host(dump: Path) -> dict[str, int]:
    """Messages the sink accepted per worker host (the client address of each transaction)."""
    names = {ip: host for host, (_, ip) in HOSTS.items()}
    return dict(Counter(names.get(ip, ip) for ip in received_from(dump, "X-Client-Addr")))


def _stop(process: subprocess.Popen[bytes]) -> bool:
    """Warm shutdown (SIGTERM); False when the worker had to be killed after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


def _holding(settings: Settings, campaign_id: int, host: str) -> bool:
    with session_scope(settings) as session:
        return session.scalar(select(Delivery.id).where(
            Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sending,
            Delivery.claimed_by.startswith(f"{host}:")).limit(1)) is not None  # fmt: skip


def _reachable(settings: Settings) -> bool:
    try:
        with session_scope(settings) as session:
            session.execute(select(1))
        return True
    except Exception:
        return False


def _count(settings: Settings, campaign_id: int, status: DeliveryStatus) -> int:
    with session_scope(settings) as session:
        return int(session.scalar(select(func.count()).where(
            Delivery.campaign_id == campaign_id, Delivery.status == status)) or 0)  # fmt: skip


def _sample_holders(settings: Settings, campaign_id: int, holders: Counter[str], seconds: float) -> None:
    """Claimed rows per claim holder's host (host:pid:run), sampled while the campaign sends."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with session_scope(settings) as session:
            for holder in session.scalars(select(Delivery.claimed_by).where(
                    Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sending)):  # fmt: skip
                holders[(holder or "").split(":")[0]] += 1
        time.sleep(0.1)


def _shares_from_logs(log_dir: Path, campaign_id: int) -> dict[str, int]:
    shares: Counter[str] = Counter()
    for host in HOSTS:
        for line in (log_dir / f"{host}.log").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == "batch" and entry.get("campaign") == campaign_id:
                    shares[entry["host"]] += entry["sent"]
    return dict(shares)
