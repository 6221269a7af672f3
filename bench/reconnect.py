"""Benchmark what a 421 hang-up costs one SMTP session: with the warm spare connection and without it.

One session sends `--messages` messages of 30 KB into an in-process aiosmtpd server with PIPELINING that
answers `421 4.7.0` and hangs up on every tenth; the pace is left out (the reconnect alone). Opening a
connection is made `--connect-ms` slower, as to a relay that far away (TCP, greeting and EHLO are three
round trips; STARTTLS adds two): on loopback a reconnect costs next to nothing. The two variants
alternate, `--rounds` times each, in one process, so both see the same machine.
"""

from __future__ import annotations

import argparse
import smtplib
import time

from newsletter import mailer
from newsletter.mailer import SMTPMailer
from tests.smtpserver import RecordingSMTPServer

_BODY = b"Subject: bench\r\n\r\n" + (b"y" * 998 + b"\r\n") * 30


def _every_tenth(rcpt: str) -> str | None:
    number = int(rcpt[1:].partition("@")[0])
    return "421 4.7.0 Too many messages, slow down" if number % 10 == 9 else None


def _send(smtp: RecordingSMTPServer, count: int, spare: bool) -> float:
    pool = SMTPMailer(smtp.url + "?max_connections=4")
    pool.pacer.acquire = lambda server, ceiling=None: None  # type: ignore[method-assign]
    mailer._SMTPSession.keep_warm_spare = spare
    items = [("news@example.org", f"r{i}@example.com", _BODY) for i in range(count)]
    started = time.perf_counter()
    with pool.session() as session:
        refused = sum(result.code == 421 for result in session.send_many(items))
    assert refused == count // 10
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connect-ms", type=float, default=20.0, help="extra time to open a connection")
    args = parser.parse_args()
    connect = smtplib.SMTP.connect

    def distant(self: smtplib.SMTP, *where: object, **how: object) -> tuple[int, bytes]:
        time.sleep(args.connect_ms / 1000)
        return connect(self, *where, **how)  # type: ignore[arg-type]

    smtplib.SMTP.connect = distant  # type: ignore[method-assign]
    times: dict[bool, list[float]] = {False: [], True: []}
    with RecordingSMTPServer(pipelining=True, responses=_every_tenth) as smtp:
        for _ in range(args.rounds):
            for spare in (False, True):
                times[spare].append(_send(smtp, args.messages, spare))
    mailer._SMTPSession.keep_warm_spare = True
    for spare, label in ((False, "reconnecting after each 421"), (True, "switching to the warm spare")):
        runs = ", ".join(f"{t:.2f}" for t in times[spare])
        setup = f"{args.messages:,} messages, {args.messages // 10} of them 421, connect +{args.connect_ms:.0f} ms"
        print(f"{setup}: {label}: {runs} s")
    print(f"best of each: spare / reconnect = {min(times[True]) / min(times[False]):.2f}")


if __name__ == "__main__":
    main()
