"""The Celery application, configured from newsletter.config for the guarantees of the sending pipeline."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from newsletter import queues
from newsletter.config import get_settings

settings = get_settings()

app = Celery("newsletter", include=["worker.tasks"])
app.conf.update(
    broker_url=settings.broker_url or "memory://",
    # Embedded mode: no broker, every task runs in the caller's process as it is enqueued.
    task_always_eager=settings.broker_url is None,
    task_eager_propagates=True,
    task_ignore_result=True,
    # A task is acknowledged only when it finished, and a worker killed mid-task gives it back.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A batch spends most of its time waiting on SMTP replies and the database, so two processes per core
    # send faster than Celery's one (measured in `make bench`: the README starts workers with no flags).
    worker_concurrency=min(2 * (os.cpu_count() or 1), 16),
    task_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    # Batches take seconds; an hour of visibility only matters if a whole worker host disappears,
    # and the periodic sweep re-enqueues such work long before that.
    broker_transport_options={"visibility_timeout": 3600},
    # Periodic housekeeping on its own queue, which every worker consumes beside the batches' (newsletter/
    # queues.py): a worker started without -Q consumes every queue listed here.
    task_default_queue=queues.BATCHES,
    task_queues=[Queue(name, routing_key=name) for name in queues.ALL],
    task_routes={
        "worker.tasks.sweep": {"queue": queues.HOUSEKEEPING},
        "worker.tasks.dispatch_webhooks": {"queue": queues.HOUSEKEEPING},
        "worker.tasks.process_provider_events": {"queue": queues.HOUSEKEEPING},
    },
    beat_schedule={
        "sweep": {"task": "worker.tasks.sweep", "schedule": float(settings.sweep_interval_seconds)},
        "webhooks": {"task": "worker.tasks.dispatch_webhooks", "schedule": float(settings.sweep_interval_seconds)},
        "provider-events": {
            "task": "worker.tasks.process_provider_events",
            "schedule": float(settings.sweep_interval_seconds),
            "kwargs": {"prune": True},
        },
    },
)

# Logging in our format and the metrics port: connected to Celery's signals on import.
import worker.observability  # noqa: E402, F401
