"""Benchmark pacing: the pipeline against an SMTP server that really throttles, and against random transient
failures, each beside its baseline measured in the same run.

The server is postfix's smtp-sink behind a small asyncio proxy of ours that, per transaction (at MAIL FROM),
either answers `421 4.7.0 too fast` and hangs up when its token bucket at R msg/s is empty, or turns the
sink's final 250 into a seeded random 421 / 451 4.3.0 / 452 4.3.1. The clean baseline goes through the
same proxy with no faults, so the proxy's own cost is in both figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from bench.delivery import Run, free_port, process, publish, run_campaign, scratch_database, seed, wait_port
from newsletter.config import Settings, load_settings
from newsletter.db import make_engine
from newsletter.pacing import RedisPacer

SECRET = "bench-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway database
TOO_FAST = b"421 4.7.0 too fast, slow down\r\n"
RANDOM_FAULTS = ((0.07, b"421 4.7.0 Too many messages, slow down\r\n"),
                 (0.07, b"451 4.3.0 Temporary lookup failure\r\n"),
                 (0.06, b"452 4.3.1 Insufficient system storage\r\n"))  # fmt: skip
# --faults no-421: the same 20% without the connection closes a 421 brings (what reconnecting costs)
NO_421_FAULTS = ((0.07, b"451 4.3.0 Temporary lookup failure\r\n"),
                 (0.13, b"452 4.3.1 Insufficient system storage\r\n"))  # fmt: skip


@dataclass
class Counters:
    """Shared with the proxy process: accepted messages, refusals, and the accept times' window."""

    accepted: Any
    refused: Any
    first_at: Any  # time.time() of the accepted message number `mark_low` (a tenth of the campaign)
    last_at: Any  # ... and of number `mark_high` (six tenths)
    mark_low: Any
    mark_high: Any


async def _reply(reader: asyncio.StreamReader) -> bytes:
    lines = [await reader.readline()]
    while len(lines[-1]) > 3 and lines[-1][3:4] == b"-":
        lines.append(await reader.readline())
    return b"".join(lines)


class Proxy:
    def __init__(
        self, upstream: int, rate: float | None, faults: tuple[tuple[float, bytes], ...], counters: Counters
    ) -> None:
        self.upstream = upstream
        self.rate = rate
        self.burst = max(1.0, (rate or 0) / 10)
        self.tokens = self.burst
        self.at = time.monotonic()
        self.faults = faults
        self.rng = random.Random(12) if faults else None
        self.counters = counters

    def _fate(self) -> bytes | None:
        """What this transaction gets: None (accepted by the sink) or a temporary failure."""
        if self.rate:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens < 1:
                return TOO_FAST
            self.tokens -= 1
        if self.rng is not None:
            roll = self.rng.random()
            for share, answer in self.faults:
                if roll < share:
                    return answer
                roll -= share
        return None

    def _accepted(self) -> None:
        c = self.counters
        with c.accepted.get_lock():
            c.accepted.value += 1
            number = c.accepted.value
        if number == c.mark_low.value:
            c.first_at.value = time.time()
        if number == c.mark_high.value:
            c.last_at.value = time.time()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            client_w.write(await _reply(up_r))
            fate: bytes | None = None
            while line := await client_r.readline():
                verb = line[:4].upper()
                if verb == b"MAIL":
                    fate = self._fate()
                    if fate is not None and fate.startswith(b"421"):
                        with self.counters.refused.get_lock():
                            self.counters.refused.value += 1
                        client_w.write(fate)  # 421: the server closes the connection
                        await client_w.drain()
                        return
                up_w.write(line)
                reply = await _reply(up_r)
                if verb == b"DATA" and reply.startswith(b"354"):
                    client_w.write(reply)
                    up_w.write(await client_r.readuntil(b"\r\n.\r\n"))
                    reply = await _reply(up_r)
                    if fate is not None:
                        with self.counters.refused.get_lock():
                            self.counters.refused.value += 1
                        reply = fate
                    elif reply.startswith(b"250"):
                        self._accepted()
                    fate = None
                client_w.write(reply)
                await client_w.drain()
                if verb == b"QUIT":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_w.close()
            client_w.close()


def _serve(
    port: int, upstream: int, rate: float | None, faults: tuple[tuple[float, bytes], ...], counters: Counters
) -> None:
    async def run() -> None:
        proxy = Proxy(upstream, rate, faults, counters)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, limit=1 << 20)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


class ProxyProcess:
    """The proxy in a process of its own (it must not share a GIL with anything measured)."""

    def __init__(
        self, upstream: int, rate: float | None, faults: tuple[tuple[float, bytes], ...], expected: int
    ) -> None:
        self.port = free_port()
        ctx = multiprocessing.get_context("fork")
        self.counters = Counters(
            ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("d", 0.0), ctx.Value("d", 0.0),
            ctx.Value("q", max(1, expected // 10)), ctx.Value("q", max(2, expected * 6 // 10)),
        )  # fmt: skip
        self.proc = ctx.Process(target=_serve, args=(self.port, upstream, rate, faults, self.counters), daemon=True)

    def __enter__(self) -> ProxyProcess:
        self.proc.start()
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(10)

    @property
    def steady_rate(self) -> float:
        """Accepted messages/s from the 10th to the 60th percent of the campaign's messages: the first pass,
        without start-up or the tail of retries waiting out their backoff (with 20% deferred, the last
        fifth of acceptances are retries)."""
        c = self.counters
        span = c.last_at.value - c.first_at.value
        return (c.mark_high.value - c.mark_low.value) / span if span > 0 else 0.0

    @property
    def refused_share(self) -> float:
        accepted, refused = self.counters.accepted.value, self.counters.refused.value
        return refused / max(1, accepted + refused)


@dataclass
class PacingFigures:
    """The throttle runs (R, achieved steady rate, share of 421s) and the clean vs random-failure runs."""

    throttled: list[tuple[float, float, float]]
    clean: Run
    faulty: Run
    clean_steady: float
    faulty_steady: float
    faulty_refused: float

    @property
    def faulty_ratio(self) -> float:
        return self.faulty.rate / self.clean.rate


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rates", default="100,400", help="throttle thresholds R (msg/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=25, help="campaign size for a throttle run: R x this")
    parser.add_argument("--fault-recipients", type=int, default=10_000, help="campaign size, random-failure run")
    parser.add_argument("--faults", choices=["mixed", "no-421"], default="mixed", help="the random failures' mix")


def measure(
    settings: Settings, engine: Engine, digest: str, sink_port: int, args: argparse.Namespace, work: Path
) -> PacingFigures:
    """Throttle runs at each R, then the clean and the random-failure campaigns, all into smtp-sink behind
    the proxy. `settings` carry the database and the broker (Redis: the pace is shared through it)."""
    base = settings.model_copy(update={"retry_base_seconds": 0.2, "retry_max_attempts": 10})
    import redis as redis_client

    flush = redis_client.Redis.from_url(base.broker_url or "")
    throttled = []
    for rate in (float(r) for r in args.rates.split(",") if r):
        count = int(rate * args.seconds)
        with ProxyProcess(sink_port, rate, (), count) as proxy:
            run_settings = base.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{proxy.port}?max_connections=64"})
            slug = f"throttle{int(rate)}"
            seed(engine, slug, count)
            flush.flushdb()  # each run starts from an unknown pace
            run = run_campaign(run_settings, digest, slug, args.concurrency, work / "workers.log")
            throttled.append((rate, proxy.steady_rate, proxy.refused_share))
            print(
                f"  R {rate:5.0f}/s: achieved {proxy.steady_rate:6.1f}/s ({proxy.steady_rate / rate:.2f} of R; "
                f"target 0.8-1.2), 421 to {proxy.refused_share:.1%} of transactions; {count:,} recipients in "
                f"{run.seconds:.1f}s, ledger {run.counts}",
                flush=True,
            )
    results = {}
    mix = RANDOM_FAULTS if args.faults == "mixed" else NO_421_FAULTS
    for faults in (False, True):
        with ProxyProcess(sink_port, None, mix if faults else (), args.fault_recipients) as proxy:
            run_settings = base.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{proxy.port}?max_connections=64"})
            slug = "random" if faults else "clean"
            seed(engine, slug, args.fault_recipients)
            flush.flushdb()
            run = run_campaign(run_settings, digest, slug, args.concurrency, work / "workers.log")
            results[faults] = (run, proxy.steady_rate, proxy.refused_share)
            paces = [p.as_dict() for p in RedisPacer(base.broker_url or "").snapshot()]
            print(f"  ({slug} run: {run.seconds:.1f}s; ledger {run.counts}; pace at the end {paces})", flush=True)
    (clean, clean_steady, _), (faulty, faulty_steady, refused) = results[False], results[True]
    return PacingFigures(throttled, clean, faulty, clean_steady, faulty_steady, refused)


def describe_faults(args: argparse.Namespace) -> str:
    mix = RANDOM_FAULTS if args.faults == "mixed" else NO_421_FAULTS
    return b", ".join(b"%d%% %s" % (round(share * 100), answer[:9].strip()) for share, answer in mix).decode()


def report(figures: PacingFigures, args: argparse.Namespace) -> None:
    print("\npacing against a server throttling at R (token bucket; 421 4.7.0 and hang up above it):")
    for rate, achieved, refused in figures.throttled:
        print(f"  R {rate:5.0f}/s: achieved {achieved:6.1f}/s = {achieved / rate:.2f} of R (target 0.8-1.2), "
              f"421 to {refused:.1%} of transactions")  # fmt: skip
    clean, faulty = figures.clean, figures.faulty
    print(
        f"\n{args.fault_recipients:,} recipients, clean vs 20% random transient failures ({describe_faults(args)}):\n"
        f"  clean:  {clean.rate:6,.0f} msg/s end to end ({clean.seconds:.1f}s), steady {figures.clean_steady:,.0f}/s\n"
        f"  faulty: {faulty.rate:6,.0f} msg/s end to end ({faulty.seconds:.1f}s), steady "
        f"{figures.faulty_steady:,.0f}/s; {figures.faulty_refused:.1%} of transactions refused; "
        f"ledger {faulty.counts}\n"
        f"  ratio faulty / clean: {figures.faulty_ratio:.2f} end to end, "
        f"{figures.faulty_steady / max(figures.clean_steady, 1):.2f} steady (target >= 0.50; before the pacer ~2 msg/s)"
    )


def run_alone() -> None:
    """`python -m bench.pacing`: these figures alone (`make bench` prints them with bench.delivery's)."""
    parser = argparse.ArgumentParser(description=__doc__)
    arguments(parser)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "4")))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-pacing-"))
    sink_port, redis_port = free_port(), free_port()
    sink = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"]
    redis = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process(sink, sink_port), process(redis, redis_port), scratch_database() as url:
        settings = load_settings(
            database_url=url, broker_url=f"redis://127.0.0.1:{redis_port}/0", secret_key=SECRET,
            base_url="https://news.example.org", environment="production",
        )  # fmt: skip
        engine = make_engine(url)
        digest = publish(settings)
        print(f"worker concurrency {args.concurrency}; retries after 0.2 s doubling; smtp-sink behind our proxy")
        report(measure(settings, engine, digest, sink_port, args, work), args)
        engine.dispose()


if __name__ == "__main__":
    run_alone()
