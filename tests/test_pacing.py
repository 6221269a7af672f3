"""Adaptive pacing per SMTP server: AIMD on pacing signals, in one process and shared through Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from newsletter.config import load_settings
from newsletter.mailer import SMTPMailer
from newsletter.pacing import LocalPacer, Pacer, PacingParams, RedisPacer, get_pacer, is_pacing_signal
from tests.conftest import ROOT, TEST_SECRET
from tests.smtpserver import AboveRate, RecordingSMTPServer

pytestmark = pytest.mark.serial  # its tests measure rates and waits

SERVER = "smtp://mx.example.net:25"
TOO_FAST = (421, "4.7.0 Too many messages, slow down")


@pytest.fixture(params=["local", "redis"])
def make_pacer(request: pytest.FixtureRequest) -> Iterator[Callable[..., Pacer]]:
    """Build a pacer of either kind: each test holds for one process and for a fleet sharing Redis."""
    if request.param == "local":
        yield lambda params=None: LocalPacer(params)
        return
    url = request.getfixturevalue("redis_url")
    yield lambda params=None: RedisPacer(url, params)


def answer(pacer: Pacer, code: int, text: str, count: int = 1, server: str = SERVER) -> None:
    for _ in range(count):
        pacer.acquire(server)
        pacer.record(server, code, text)


def rate(pacer: Pacer, server: str = SERVER) -> float | None:
    [pace] = [p for p in pacer.snapshot() if p.server == server]
    return pace.rate


def timed(pacer: Pacer, count: int, server: str = SERVER, ceiling: float | None = None) -> float:
    started = time.monotonic()
    for _ in range(count):
        pacer.acquire(server, ceiling)
    return time.monotonic() - started


def test_pacing_signals_are_421_4_7_x_4_2_1_and_too_many() -> None:
    signals = [
        (421, "4.7.0 Too many messages"), (451, "4.7.1 rate limited"), (421, "service not available"),
        (450, "4.2.1 try later"), (452, "too many recipients"), (451, "Too many connections from you"),
    ]  # fmt: skip
    others = [
        (451, "4.3.0 Temporary lookup failure"), (452, "4.3.1 Insufficient system storage"),
        (452, "4.2.2 Mailbox full"), (250, "2.0.0 Ok"), (550, "5.7.1 too many complaints"), (0, "timed out"),
    ]  # fmt: skip
    assert [is_pacing_signal(c, t) for c, t in signals] == [True] * len(signals)
    assert [is_pacing_signal(c, t) for c, t in others] == [False] * len(others)


def test_a_server_is_unlimited_until_it_complains(make_pacer: Callable[..., Pacer]) -> None:
    pacer = make_pacer()
    answer(pacer, 250, "2.0.0 Ok", 300)
    assert timed(pacer, 200) < 0.2  # no waiting at all
    [pace] = pacer.snapshot()
    assert (pace.server, pace.rate, pace.reason, pace.changed_at) == (SERVER, None, None, None)
    assert not pacer.slowed(SERVER)


def test_421s_cut_the_pace_below_what_the_server_answered(make_pacer: Callable[..., Pacer]) -> None:
    pacer = make_pacer()
    started = time.monotonic()
    for _ in range(100):  # ~250/s accepted
        answer(pacer, 250, "2.0.0 Ok")
        time.sleep(0.004)
    answer(pacer, *TOO_FAST, 30)  # then a fifth of the replies say too fast: the server means it
    elapsed = time.monotonic() - started
    [pace] = pacer.snapshot()
    # cut from unlimited to a finite pace derived from the last second's accepted replies (an estimate:
    # batched replies from several processes make it approximate, so only its order of magnitude is checked)
    assert pace.rate is not None and pace.rate < 2 * 100 / elapsed
    assert pace.reason == "421 4.7.0 Too many messages, slow down"
    assert pace.changed_at is not None and abs(pace.changed_at.timestamp() - time.time()) < 5
    assert pacer.slowed(SERVER)
    # and the messages that follow are spaced at that pace
    assert timed(pacer, 6) >= 4 / pace.rate


def test_one_421_among_many_accepted_messages_is_noise(make_pacer: Callable[..., Pacer]) -> None:
    pacer = make_pacer()
    for _ in range(10):
        answer(pacer, 250, "2.0.0 Ok", 20)
        answer(pacer, *TOO_FAST)  # ~5% of replies, spread out
    assert rate(pacer) is None


def test_451_452_and_mailbox_full_never_slow_the_server(make_pacer: Callable[..., Pacer]) -> None:
    pacer = make_pacer()
    answer(pacer, 451, "4.3.0 Temporary lookup failure", 50)
    answer(pacer, 452, "4.3.1 Insufficient system storage", 50)
    answer(pacer, 452, "4.2.2 Mailbox full", 50)
    assert rate(pacer) is None and not pacer.slowed(SERVER)


def test_accepted_messages_raise_the_pace_additively_back_to_the_ceiling(make_pacer: Callable[..., Pacer]) -> None:
    pacer = make_pacer(PacingParams(floor=10, increase=0.5, ceiling=35))
    answer(pacer, *TOO_FAST)  # the first reply, and it says too fast: cut to the floor
    assert rate(pacer) == 10
    paces = []
    for _ in range(3):
        time.sleep(1.05)  # one step per second of accepted replies
        answer(pacer, 250, "2.0.0 Ok")
        paces.append(rate(pacer))
    assert paces[0] is not None and paces[1] is not None
    # equal steps (additive, not multiplicative): half the ~20/s it was cut from, per second
    first, second = paces[0] - 10, paces[1] - paces[0]
    assert 9 <= first <= 12 and second == pytest.approx(first, rel=0.15)
    assert paces[2] is None  # past the ceiling: back to the ceiling, which still holds
    assert timed(pacer, 8) >= 7 / 35


def test_the_pace_never_falls_below_the_floor(make_pacer: Callable[..., Pacer]) -> None:
    pacer = make_pacer(PacingParams(floor=20))
    for _ in range(2):
        answer(pacer, *TOO_FAST, 30)
        assert rate(pacer) == 20
        time.sleep(1.05)  # one cut per second at most: let the second one happen
    assert 0.25 <= timed(pacer, 8) < 1.0  # 20/s, not slower


def test_a_cut_stays_under_the_ceiling_which_paces_an_unlimited_server(
    make_pacer: Callable[..., Pacer],
) -> None:
    pacer = make_pacer(PacingParams(ceiling=50))
    assert timed(pacer, 11) >= 10 / 50  # RATE_LIMIT as every server's ceiling
    assert timed(pacer, 6, server="smtp://other:25", ceiling=25) >= 5 / 25  # its own rate= wins
    answer(pacer, 250, "2.0.0 Ok", 30)
    answer(pacer, *TOO_FAST, 10)
    cut = rate(pacer)
    assert cut is not None and cut <= 50


def test_settings_choose_the_pacer_and_its_bounds(redis_url: str) -> None:
    embedded = load_settings(secret_key=TEST_SECRET, pacing_floor=2, rate_limit=30)
    local = get_pacer(embedded)
    assert isinstance(local, LocalPacer) and local.params == PacingParams(floor=2, ceiling=30)
    shared = get_pacer(load_settings(secret_key=TEST_SECRET, broker_url=redis_url))
    assert isinstance(shared, RedisPacer) and shared.params.ceiling is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("pacing_floor", 0, "greater than 0"),
        ("pacing_decrease", 1, "less than 1"),
        ("pacing_increase", 0, "greater than 0"),
        ("pacing_tolerance", 1, "less than 1"),
    ],
)
def test_bad_pacing_settings_are_refused_by_name(name: str, value: float, message: str) -> None:
    from newsletter.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(secret_key=TEST_SECRET, **{name: value})
    assert str(caught.value).startswith(f"NEWSLETTER_{name.upper()}: ") and message in str(caught.value)


TAKER = textwrap.dedent(
    """
    import sys, time
    from newsletter.pacing import RedisPacer
    url, server = sys.argv[1], sys.argv[2]
    start, seconds = float(sys.argv[3]), float(sys.argv[4])
    pacer = RedisPacer(url)
    time.sleep(max(0.0, start - time.time()))
    taken, began = 0, time.time()  # later than `start` when imports were slow
    while time.time() - start < seconds:
        pacer.acquire(server)
        taken += 1
    print(taken, began)
    """
)


@pytest.mark.redis
def test_two_processes_share_one_pace_through_redis(redis_url: str) -> None:
    # one process sees the server complain; the pace it cut holds for every process
    RedisPacer(redis_url, PacingParams(floor=80)).record(SERVER, *TOO_FAST)
    assert rate(RedisPacer(redis_url)) == 80
    seconds = 4.0
    start = time.time() + 3.0  # both begin together, after their imports (slow on a busy machine)
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, redis_url, SERVER, str(start), str(seconds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30)[0].split() for p in takers]
    counts = [int(taken) for taken, _ in outputs]
    aggregate = sum(counts) / (start + seconds - max(float(began) for _, began in outputs))
    print(f"\npace 80/s shared by 2 processes: {counts} in {seconds}s -> {aggregate:.1f}/s")
    assert all(c > seconds * 80 / 2 * 0.7 for c in counts)  # each got a fair share
    assert aggregate == pytest.approx(80, rel=0.10)


def test_redis_down_falls_back_to_pacing_this_process() -> None:
    pacer = RedisPacer("redis://127.0.0.1:1/0", PacingParams(floor=20))
    answer(pacer, *TOO_FAST, 5)  # no exception: the batch goes on, paced in-process
    assert pacer.slowed(SERVER) is False  # nothing read from Redis...
    assert 0.2 <= timed(pacer, 6) < 1.0  # ...but the local pace (the floor, 20/s) holds
    assert [p.rate for p in pacer.snapshot()] == [20]


@pytest.mark.redis
def test_redis_coming_back_takes_over_again(redis_url: str) -> None:
    pacer = RedisPacer(redis_url)
    pacer.client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    pacer._script = pacer.client.register_script(pacer._script.script)
    answer(pacer, 250, "2.0.0 Ok", 3)
    assert pacer._fallback is not None
    pacer.client = redis.Redis.from_url(redis_url)
    pacer._script = pacer.client.register_script(pacer._script.script)
    answer(pacer, *TOO_FAST, 3)
    assert pacer._fallback is None and rate(RedisPacer(redis_url)) is not None


@pytest.mark.parametrize("threshold", [60.0, 150.0])
def test_the_pace_converges_to_what_a_throttling_server_accepts(
    threshold: float, make_pacer: Callable[..., Pacer]
) -> None:
    """After the first seconds (the unlimited start and its cut), the pace stays within a tenth of what the
    server accepts, and few messages are refused: it is cut to just under the accepted rate, climbs back
    to it within a second or two, and probes past it gently."""
    throttle = AboveRate(threshold)
    with RecordingSMTPServer(pipelining=True, responses=throttle, respond_at="data") as smtp:
        mailer = SMTPMailer(smtp.url, make_pacer())
        items = [("news@example.org", f"r{n}@example.com", b"Subject: hi\r\n\r\nhello\r\n") for n in range(100_000)]
        started = time.monotonic()
        refused_then = None
        with mailer.session() as session:
            for _ in session.send_many(items):
                if refused_then is None and time.monotonic() - started > 2:
                    refused_then, accepted_then = throttle.refused, throttle.accepted
                if time.monotonic() - started > 8:
                    break
        seconds = time.monotonic() - started
    assert refused_then is not None
    steady = [t for t in throttle.accepted_at if t - started > 2]
    achieved = len(steady) / (seconds - 2)
    refused = throttle.refused - refused_then
    share = refused / max(1, refused + throttle.accepted - accepted_then)
    print(f"\nthrottling server at {threshold:.0f}/s: accepted {achieved:.0f}/s after 2 s, 421 to {share:.1%}")
    assert achieved == pytest.approx(threshold, rel=0.1)
    assert share < 0.1


@pytest.mark.redis
@pytest.mark.postgres
def test_campaigns_status_shows_each_servers_pace_and_what_last_slowed_it(
    committed_pg: str, redis_url: str, tmp_path
) -> None:
    from tests.factories import SAMPLE_DIGEST
    from tests.test_cli import Cli

    cli = Cli(committed_pg, tmp_path)
    cli.env["NEWSLETTER_REDIS_URL"] = redis_url
    cli.run("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    slug = cli.run("digests", "publish", str(SAMPLE_DIGEST)).stdout.strip()
    campaign = cli.sql(
        "WITH c AS (INSERT INTO campaigns (digest_id, subject, status, recipient_count, created_at, updated_at) "
        f"SELECT id, 'Hello', 'sending', 0, now(), now() FROM digests WHERE slug = '{slug}' RETURNING id) "
        "SELECT id FROM c"
    )
    assert cli.json("campaigns", "status", str(campaign))["pacing"] == []  # nothing sent: nothing paced
    # a server that said "too fast", with a reply that tries to write to the terminal
    RedisPacer(redis_url, PacingParams(floor=80)).record(SERVER, 421, "4.7.0 Too many \x1b[31mmessages")
    [pace] = cli.json("campaigns", "status", str(campaign))["pacing"]
    assert (pace["server"], pace["rate"], pace["reason"]) == (SERVER, 80, "421 4.7.0 Too many \x1b[31mmessages")
    assert pace["changed_at"] is not None
    human = cli.run("campaigns", "status", str(campaign)).stdout
    line = next(line for line in human.splitlines() if "pace of" in line)
    assert line.startswith(f'  pace of {SERVER}: 80.0 messages/s; last slowed by "421 4.7.0 Too many [31mmessages" at ')
    assert "\x1b" not in human
