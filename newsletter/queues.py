"""The Celery queues' names: where worker/ routes each task, and what the health page and metrics count.

Batches (and everything a request or a campaign enqueues) share the default queue. The periodic
housekeeping (the recovery sweep, the webhook dispatcher, the provider events) has its own: a campaign's
thousands of waiting batches would otherwise hold back the sweep that recovers a dead host's rows until they
had all run. Every worker consumes both (a worker alternates between its queues), so neither waits for the
other to drain.
"""

from __future__ import annotations

BATCHES = "celery"  # Celery's default queue: existing deployments' waiting tasks stay where they are
HOUSEKEEPING = "housekeeping"
ALL = (BATCHES, HOUSEKEEPING)
WORKER_QUEUES = ",".join(ALL)  # `celery -A worker worker -Q celery,housekeeping`, as the docs start it
