"""The scheduler `newsletter serve` runs when there is no broker: what Celery beat and the workers do,
in-process. One process of a `serve --workers N` holds it (a heartbeat row renewed every second, see
newsletter/delivery/scheduling.py); it starts due scheduled campaigns within a second, and sweeps every
SWEEP_INTERVAL_SECONDS. Work it finds runs in its own thread (tasks are eager without a broker)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.delivery import scheduling
from newsletter.providers import inbox
from worker import tasks

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = f"{scheduling.process_name()}:{secrets.token_hex(4)}"
        self.stopping = threading.Event()
        self.holding = threading.Event()
        # The hold is renewed by its own thread: a campaign sent by the other one takes minutes, and
        # another process must not take over meanwhile.
        self.threads = [
            threading.Thread(target=self._keep_hold, name="scheduler-hold", daemon=True),
            threading.Thread(target=self._run, name="scheduler", daemon=True),
            # every process sends webhooks (claims keep them apart): the one whose request emitted an event
            # sends it at once, and each sweeps every SWEEP_INTERVAL_SECONDS for retries due
            threading.Thread(target=self._send_webhooks, name="webhooks", daemon=True),
            # likewise provider webhook events: applied by the process that accepted them, at once
            threading.Thread(target=self._apply_provider_events, name="provider-events", daemon=True),
        ]

    def start(self) -> EmbeddedScheduler:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop; a campaign being sent is left to the next scheduler's sweep (its claims expire)."""
        self.stopping.set()
        tasks.webhooks_due.set()  # wake the webhook threads so they see they must stop
        tasks.provider_events_due.set()
        for thread in self.threads:
            thread.join(timeout)

    def _keep_hold(self) -> None:
        while not self.stopping.is_set():
            try:
                with session_scope(self.settings) as session:
                    held = scheduling.hold(session, self.holder)
            except Exception:  # the database is away: nobody holds it meanwhile, try again
                log.exception("embedded scheduler: cannot renew its hold")
                held = False
            if held and not self.holding.is_set():
                log.info("embedded scheduler: this process (%s) starts due campaigns", self.holder)
            (self.holding.set if held else self.holding.clear)()
            self.stopping.wait(scheduling.TICK_SECONDS)
        self.holding.clear()
        try:
            with session_scope(self.settings) as session:
                scheduling.release(session, self.holder)  # another process may take over at once
        except Exception:
            log.exception("embedded scheduler: cannot give up its hold")

    def _send_webhooks(self) -> None:
        self._serve(tasks.webhooks_due, lambda _: tasks.run_webhooks(self.settings).more, "sending webhooks")

    def _apply_provider_events(self) -> None:
        def one_pass(periodic: bool) -> bool:
            return tasks.run_provider_events(self.settings, prune=periodic) == inbox.BATCH

        # woken by the first of a burst of webhooks, it gathers the rest for a moment: one batch (a handful
        # of statements and one commit) instead of a transaction per request competing with the requests
        self._serve(tasks.provider_events_due, one_pass, "applying provider events", gather=tasks.PROVIDER_EVENTS_DELAY)

    def _serve(self, due: threading.Event, one_pass: Callable[[bool], bool], what: str, gather: float = 0) -> None:
        """Run `one_pass` until it has nothing more to do whenever `due` is set (`gather` seconds later),
        and every sweep anyway (`one_pass(True)`: the periodic pass)."""
        retry = scheduling.TICK_SECONDS
        while not self.stopping.is_set():
            periodic = not due.wait(self.settings.sweep_interval_seconds)
            if not periodic and gather:
                self.stopping.wait(gather)
            due.clear()
            if self.stopping.is_set():
                return
            try:
                while one_pass(periodic) and not self.stopping.is_set():
                    periodic = False
                retry = scheduling.TICK_SECONDS
            except Exception:  # the database is away or SQLite busy: try again soon, backing off to a sweep
                log.exception("embedded scheduler: %s failed; again in %.0f s", what, retry)
                if not self.stopping.wait(retry):
                    due.set()
                retry = min(retry * 2, self.settings.sweep_interval_seconds)

    def _run(self) -> None:
        next_sweep = 0.0
        while not self.stopping.wait(scheduling.TICK_SECONDS):
            if not self.holding.is_set():
                continue
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.sweep_interval_seconds
                    tasks.run_sweep(self.settings)  # starts due campaigns too
                    continue
                with session_scope(self.settings) as session:
                    due = scheduling.due_campaigns(session)
                for campaign_id in due:
                    log.info("embedded scheduler: starting campaign %s", campaign_id)
                    tasks.start_campaign(campaign_id)  # without a broker this sends it, here
            except Exception:  # one bad campaign or a database blip must not end scheduling
                log.exception("embedded scheduler: a pass failed")
