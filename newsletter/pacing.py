"""How fast each SMTP server is sent to: an AIMD pace per server, shared by every worker (Redis) or one process.

A server says "too fast" with a pacing signal (421, 4.7.x, 4.2.1, "too many connections/messages"). Each
second of replies is judged as a whole: when clearly more than PACING_TOLERANCE of them (by two standard
deviations) were pacing signals, the pace is cut to PACING_DECREASE times the rate the server actually
answered, and that rate is remembered as what the server accepts. Every second without that, the pace rises
by PACING_INCREASE of that accepted rate (back to it within a second or two); past it, by a quarter of such
a step at first, doubling with each step (a rate measured in a burst may be low), and there the share of
signals alone (no deviation margin) cuts again: the server is known to throttle, and each refusal costs a
reconnection. So the pace settles just under what the server accepts,
with few refusals, up to the ceiling (the server's `rate=` option or RATE_LIMIT); a lone 421 among hundreds
of accepted messages (a server restarting one listener) does not halve a campaign's speed — cutting on each
one was what collapsed the old per-process throttle ladder to one message every 1.6 s. Other temporary
replies (451 4.3.x local problem, 452 storage, 4.2.2 mailbox full) defer the
recipient only: they count as answers here, never as a reason to slow the server down.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from newsletter.config import Settings

__all__ = ["LocalPacer", "Pace", "Pacer", "PacingParams", "RedisPacer", "get_pacer", "is_pacing_signal"]

log = logging.getLogger(__name__)

WINDOW_SECONDS = 1.0  # replies are judged a second at a time; a cut waits this long for the next verdict
_FLUSH_SECONDS = 0.05  # unlimited pace: how often a process tells Redis what its servers answered
_REFRESH_SECONDS = 0.5  # unlimited pace: how often a process looks whether another one cut it
_IDLE_SECONDS = 3600  # a server not sent to for an hour starts again from its ceiling
_PROBE_SHARE = 0.25  # past the rate accepted at the last cut, the first step is this share of a full one

_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_TOO_MANY = re.compile(r"too many (connections|messages|recipients|mails|emails)|too fast|slow down|rate limit", re.I)


def is_pacing_signal(code: int, text: str) -> bool:
    """Whether a reply asks us to send more slowly: 421, any 4.7.x, 4.2.1, or a "too many ..." text.

    Temporary replies about the server itself or the mailbox (451 4.3.0, 452 4.3.1, 452 4.2.2) are not:
    slowing down would not cure them.
    """
    if not 400 <= code < 500:
        return False
    match = _ENHANCED.match(text)
    status = (int(match[1]), int(match[2]), int(match[3])) if match else None
    if status is not None and (status[:2] == (4, 7) or status == (4, 2, 1)):
        return True
    if code == 421:
        return True
    return bool(_TOO_MANY.search(text))


@dataclass(frozen=True)
class PacingParams:
    floor: float = 0.5
    decrease: float = 0.9
    increase: float = 0.1
    tolerance: float = 0.1
    ceiling: float | None = None  # for servers without their own `rate=`

    @classmethod
    def from_settings(cls, settings: Settings) -> PacingParams:
        return cls(
            floor=settings.pacing_floor,
            decrease=settings.pacing_decrease,
            increase=settings.pacing_increase,
            tolerance=settings.pacing_tolerance,
            ceiling=settings.rate_limit or None,
        )


@dataclass(frozen=True)
class Pace:
    """One server's pace as last seen: `rate` None means no limit (never cut, or back above its ceiling)."""

    server: str
    rate: float | None
    ceiling: float | None
    reason: str | None  # the reply that last cut the pace
    changed_at: datetime | None  # when the pace last changed

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "rate": self.rate,
            "ceiling": self.ceiling,
            "reason": self.reason,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
        }


class Pacer(Protocol):
    def acquire(self, server: str, ceiling: float | None = None) -> None:
        """Block until one more message may go to `server`."""
        ...

    def record(self, server: str, code: int, text: str) -> None:
        """What the server answered to one message (or to a connection attempt)."""
        ...

    def slowed(self, server: str) -> bool:
        """Whether the server's pace is cut below its ceiling (from this process's latest view)."""
        ...

    def snapshot(self) -> list[Pace]: ...


# --- the algorithm --------------------------------------------------------------------------------------
#
# State of one server (a Redis hash, or a dict in-process); all times in seconds on one clock:
#   rate      current pace in msg/s; 0 = unlimited (at or above the ceiling, or never cut)
#   tokens at token bucket at `rate`, holding one message at most: evenly spaced, never a burst
#   ws n sig  the current window's start, replies and pacing signals; pn psig the previous window's
#   cut_from  the rate the last cut started from; accepted, the rate answered meanwhile: they size the steps
#   probe     the share of a full step the next step past `accepted` takes (doubles with each)
#   changed   when the rate last changed; reason, reason_at: the reply behind the last cut
#
# `_advance` is the reference implementation; `_LUA` below is the same steps line by line, run atomically
# inside Redis so that any number of processes update one state.


def _significant(signals: float, replies: float, tolerance: float, probing: bool = False) -> bool:
    """More pacing signals than the tolerated share, by two standard deviations of that share: a
    server refusing a steady 7% at random is not mistaken for one refusing all above a rate. While
    `probing` above the rate the server accepted at its last cut, the share alone decides (3 signals at
    least): that server is known to throttle, and each extra refusal costs a reconnection."""
    if probing:
        return signals >= 3 and signals > tolerance * replies
    return signals > tolerance * replies + 2 * math.sqrt(replies * tolerance * (1 - tolerance))


def _step(s: dict[str, Any], rate: float, increase: float) -> float:
    """The additive step per second: `increase` of what the server accepted at the last cut while below it;
    past it, a quarter of that at first, doubling with each step without a new cut (an estimate taken in a
    burst may be low: the pace must not crawl to the server's real rate), up to `increase` of the rate cut
    from. Without an accepted rate (nothing went through at the cut), `increase` of the rate cut from."""
    accepted = s.get("accepted", 0.0)
    full = max(1.0, increase * max(s.get("cut_from", rate), accepted))
    if accepted <= 0:
        return full
    if rate < accepted:
        return max(1.0, increase * accepted)
    probe = s.get("probe", _PROBE_SHARE)
    s["probe"] = probe * 2
    return min(full, max(1.0, increase * accepted * probe))


def _advance(
    s: dict[str, Any],
    now: float,
    answers: int,
    signal: bool,
    reason: str,
    take: bool,
    ceiling: float,
    p: PacingParams,
    age: float = 0.0,
) -> float:
    """Apply replies (`answers` of them over the last `age` seconds, the last one a pacing signal when
    `signal`), raise or cut the pace, and with `take` reserve a token. Returns how long the caller must
    wait. `ceiling` 0 means none."""
    rate = s.get("rate", 0.0)
    if "ws" not in s or now - s["ws"] >= 2 * WINDOW_SECONDS:
        s.update(ws=now, n=0, sig=0, pn=0, psig=0, first=now - min(age, WINDOW_SECONDS))
    elif now - s["ws"] >= WINDOW_SECONDS:
        s.update(pn=s["n"], psig=s["sig"], n=0, sig=0, ws=s["ws"] + WINDOW_SECONDS)
    s["n"] += answers
    if signal:
        s["sig"] += 1
    weight = max(0.0, 1.0 - (now - s["ws"]) / WINDOW_SECONDS)
    replies = s["pn"] * weight + s["n"]
    signals = s["psig"] * weight + s["sig"]
    span = min(WINDOW_SECONDS, max(now - s["first"], 0.05))
    changed = s.get("changed", 0.0)
    accepted = s.get("accepted", 0.0)
    probing = 0 < accepted <= rate
    if signal and _significant(signals, replies, p.tolerance, probing) and now - changed >= WINDOW_SECONDS:
        answered = (replies - signals) / span
        sending = rate if rate > 0 else max(replies / span, answered)
        s["cut_from"] = sending
        s["accepted"] = answered  # what the server took while refusing the rest: its rate, as far as known
        # a first cut's estimate, from an unpaced burst of reconnections, may be far too low: probe at once
        s["probe"] = _PROBE_SHARE if s.get("rate", 0.0) > 0 else 1.0
        rate = max(p.floor, p.decrease * min(sending, answered))
        if ceiling > 0:
            rate = min(rate, ceiling)
        s.update(rate=rate, changed=now, reason=reason, reason_at=now)
        # judge the new pace on its own replies, not on those the old one drew
        s.update(ws=now, n=0, sig=0, pn=0, psig=0, first=now)
    elif rate > 0 and answers and now - changed >= WINDOW_SECONDS and signals / max(replies, 1) <= p.tolerance:
        step = _step(s, rate, p.increase)
        rate = rate + step * min((now - changed) / WINDOW_SECONDS, 3.0)
        if ceiling > 0 and rate >= ceiling:
            rate = 0.0  # back at the ceiling: nothing left to remember
        s.update(rate=rate, changed=now)
    wait = 0.0
    limit = rate if rate > 0 else ceiling
    if take and limit > 0:
        tokens = min(1.0, s.get("tokens", 1.0) + (now - s.get("at", now)) * limit)
        if tokens < 1:
            wait = (1 - tokens) / limit
        s.update(tokens=tokens - 1, at=now)
    return wait


_LUA = """
local s = {}
local raw = redis.call('HGETALL', KEYS[1])
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
local function num(name, default) local v = tonumber(s[name]); if v == nil then return default end; return v end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local answers, signal, reason, take = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3], ARGV[4] == '1'
local ceiling, floor, decrease, increase, tolerance = tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local W = tonumber(ARGV[10])
local PROBE_SHARE = tonumber(ARGV[14])
local age = math.min(tonumber(ARGV[13]), W)
local out = {}
local rate = num('rate', 0)
local ws, n, sig, pn, psig, first = num('ws', nil), num('n', 0), num('sig', 0), num('pn', 0), num('psig', 0),
  num('first', now)
if ws == nil or now - ws >= 2 * W then
  ws, n, sig, pn, psig, first = now, 0, 0, 0, 0, now - age
elseif now - ws >= W then
  pn, psig, n, sig, ws = n, sig, 0, 0, ws + W
end
n = n + answers
if signal then sig = sig + 1 end
local weight = math.max(0, 1 - (now - ws) / W)
local replies = pn * weight + n
local signals = psig * weight + sig
local span = math.min(W, math.max(now - first, 0.05))
local changed = num('changed', 0)
local accepted = num('accepted', 0)
local significant
if accepted > 0 and accepted <= rate then
  significant = signals >= 3 and signals > tolerance * replies
else
  significant = signals > tolerance * replies + 2 * math.sqrt(replies * tolerance * (1 - tolerance))
end
if signal and significant and now - changed >= W then
  local answered = (replies - signals) / span
  local sending = rate
  if rate <= 0 then sending = math.max(replies / span, answered) end
  out['cut_from'] = sending
  out['accepted'] = answered
  if rate > 0 then out['probe'] = PROBE_SHARE else out['probe'] = 1 end
  rate = math.max(floor, decrease * math.min(sending, answered))
  if ceiling > 0 then rate = math.min(rate, ceiling) end
  out['rate'], out['changed'], out['reason'], out['reason_at'] = rate, now, reason, now
  ws, n, sig, pn, psig, first = now, 0, 0, 0, 0, now
elseif rate > 0 and answers > 0 and now - changed >= W and signals / math.max(replies, 1) <= tolerance then
  local full = math.max(1, increase * math.max(num('cut_from', rate), accepted))
  local step = full
  if accepted > 0 and rate < accepted then
    step = math.max(1, increase * accepted)
  elseif accepted > 0 then
    local probe = num('probe', PROBE_SHARE)
    out['probe'] = probe * 2
    step = math.min(full, math.max(1, increase * accepted * probe))
  end
  rate = rate + step * math.min((now - changed) / W, 3)
  if ceiling > 0 and rate >= ceiling then rate = 0 end
  out['rate'], out['changed'] = rate, now
end
local wait = 0
local limit = rate
if limit <= 0 then limit = ceiling end
if take and limit > 0 then
  local tokens = math.min(1, num('tokens', 1) + (now - num('at', now)) * limit)
  if tokens < 1 then wait = (1 - tokens) / limit end
  out['tokens'], out['at'] = tokens - 1, now
end
out['ws'], out['n'], out['sig'], out['pn'], out['psig'], out['first'] = ws, n, sig, pn, psig, first
out['ceiling'] = ceiling
local flat = {}
for k, v in pairs(out) do
  flat[#flat + 1] = k
  if type(v) == 'number' then flat[#flat + 1] = string.format('%.17g', v) else flat[#flat + 1] = v end
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[11]))
redis.call('SADD', KEYS[2], ARGV[12])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[11]))
return {string.format('%.17g', wait), string.format('%.17g', rate)}
"""


def _pace(server: str, state: dict[str, Any]) -> Pace:
    rate = float(state.get("rate") or 0)
    ceiling = float(state.get("ceiling") or 0)
    changed = state.get("changed")
    return Pace(
        server=server,
        rate=rate or None,
        ceiling=ceiling or None,
        reason=state.get("reason") or None,
        changed_at=datetime.fromtimestamp(float(changed), UTC) if changed else None,
    )


class LocalPacer:
    """The pace of each server for this process alone (embedded mode, or while Redis is away)."""

    def __init__(self, params: PacingParams | None = None) -> None:
        self.params = params or PacingParams()
        self._states: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _apply(self, server: str, answers: int, signal: bool, reason: str, take: bool, ceiling: float | None) -> float:
        limit = ceiling or self.params.ceiling or 0.0
        with self._lock:
            state = self._states.setdefault(server, {})
            state["ceiling"] = limit
            return _advance(state, time.time(), answers, signal, reason, take, limit, self.params)

    def acquire(self, server: str, ceiling: float | None = None) -> None:
        wait = self._apply(server, 0, False, "", True, ceiling)
        if wait > 0:
            time.sleep(wait)

    def record(self, server: str, code: int, text: str) -> None:
        signal = is_pacing_signal(code, text)
        self._apply(server, 1, signal, f"{code} {text}"[:300] if signal else "", False, None)

    def slowed(self, server: str) -> bool:
        with self._lock:
            return bool(self._states.get(server, {}).get("rate"))

    def snapshot(self) -> list[Pace]:
        with self._lock:
            return [_pace(server, dict(state)) for server, state in sorted(self._states.items())]


class RedisPacer:
    """The pace of each server shared by every process through Redis, one atomic script per update.

    While a server's pace is unlimited a process does not ask Redis per message: it sends its replies'
    count every 0.05 s, any pacing signal at once, and re-reads the pace every 0.5 s. Once the pace is
    finite every message takes its token from the shared bucket.
    """

    prefix = "newsletter:pace:"

    def __init__(self, url: str, params: PacingParams | None = None) -> None:
        import redis

        self.params = params or PacingParams()
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._script = self.client.register_script(_LUA)
        self._lock = threading.Lock()
        self._rates: dict[str, tuple[float, float]] = {}  # server -> (rate, monotonic time read)
        self._unsent: dict[str, int] = {}  # replies not yet told to Redis
        self._since: dict[str, float] = {}  # monotonic time of the oldest of them
        self._flushed = time.monotonic()
        self._ceilings: dict[str, float] = {}
        self._fallback: LocalPacer | None = None

    def _call(
        self, server: str, answers: int, signal: bool, reason: str, take: bool, ceiling: float, age: float = 0.0
    ) -> float:
        import redis

        p = self.params
        try:
            wait, rate = self._script(
                keys=[self.prefix + server, self.prefix + "servers"],
                args=[answers, int(signal), reason, int(take), ceiling, p.floor, p.decrease, p.increase,
                      p.tolerance, WINDOW_SECONDS, _IDLE_SECONDS, server, age, _PROBE_SHARE],
            )  # fmt: skip
        except redis.RedisError as error:
            # Redis restarting must not stop the send: pace this process alone meanwhile. With N workers
            # a cut server may get up to N times its pace for the outage; stopping would be worse.
            if self._fallback is None:
                log.warning("pacing: Redis unavailable (%s); pacing this process alone", error)
                self._fallback = LocalPacer(p)
            state = self._fallback
            with state._lock:
                local = state._states.setdefault(server, {})
                local["ceiling"] = ceiling
                return _advance(local, time.time(), answers, signal, reason, take, ceiling, p, age)
        self._fallback = None
        with self._lock:
            self._rates[server] = (float(rate), time.monotonic())
        return float(wait)

    def _limit(self, ceiling: float | None) -> float:
        return ceiling or self.params.ceiling or 0.0

    def acquire(self, server: str, ceiling: float | None = None) -> None:
        limit = self._limit(ceiling)
        with self._lock:
            self._ceilings[server] = limit
            rate, read = self._rates.get(server, (0.0, -math.inf))
            fresh = time.monotonic() - read < _REFRESH_SECONDS
            if rate == 0 and limit == 0 and fresh and self._fallback is None:
                return  # unlimited, as far as anyone knew half a second ago
            answers = self._unsent.pop(server, 0)
            age = time.monotonic() - self._since.pop(server, time.monotonic())
        wait = self._call(server, answers, False, "", True, limit, age)
        if wait > 0:
            time.sleep(wait)

    def record(self, server: str, code: int, text: str) -> None:
        signal = is_pacing_signal(code, text)
        now = time.monotonic()
        with self._lock:
            self._unsent[server] = self._unsent.get(server, 0) + 1
            self._since.setdefault(server, now)
            if not signal and now - self._flushed < _FLUSH_SECONDS:
                return
            self._flushed = now
            pending = [(name, count, now - self._since.get(name, now)) for name, count in self._unsent.items()]
            self._unsent.clear()
            self._since.clear()
        for name, answers, age in pending:
            is_signal = signal and name == server
            reason = f"{code} {text}"[:300] if is_signal else ""
            self._call(name, answers, is_signal, reason, False, self._ceilings.get(name, self._limit(None)), age)

    def slowed(self, server: str) -> bool:
        with self._lock:
            return bool(self._rates.get(server, (0.0, 0.0))[0])

    def snapshot(self) -> list[Pace]:
        import redis

        try:
            servers = sorted(s.decode() for s in self.client.smembers(self.prefix + "servers"))  # type: ignore[union-attr]
            paces = []
            for server in servers:
                raw = self.client.hgetall(self.prefix + server)
                if raw:
                    paces.append(_pace(server, {k.decode(): v.decode() for k, v in raw.items()}))  # type: ignore[union-attr]
            return paces
        except redis.RedisError:
            return self._fallback.snapshot() if self._fallback is not None else []


def get_pacer(settings: Settings) -> Pacer:
    """Shared through Redis when there is one (a broker or REDIS_URL), else for this process."""
    params = PacingParams.from_settings(settings)
    url = settings.effective_redis_url
    return RedisPacer(url, params) if url else LocalPacer(params)
