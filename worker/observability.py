"""What a Celery worker host shows an operator: its logs in our format, and its metrics on a port.

Metrics use prometheus-client's multiprocess mode: every pool process (prefork children, or the solo
process) writes its values to files in PROMETHEUS_MULTIPROC_DIR, and the worker's main process serves
their sum on WORKER_METRICS_PORT, so one scrape per worker host counts every child, including children
that were recycled. Give each worker instance its own directory: it is emptied when the worker starts.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import setup_logging, worker_init, worker_process_shutdown

from newsletter import logs
from newsletter.config import get_settings

log = logging.getLogger(__name__)

if (_directory := get_settings().prometheus_multiproc_dir) is not None:
    # before any metric exists: prometheus-client writes each one's file there as it is created
    _directory.mkdir(parents=True, exist_ok=True)


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Connected, this stops Celery from installing its own handlers: ours format every line."""
    logs.configure(get_settings())


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    settings = get_settings()
    if settings.worker_metrics_port is None:
        return
    directory = settings.prometheus_multiproc_dir
    if directory is None:
        # SystemExit, not an exception: Celery logs and ignores what a signal receiver raises
        raise SystemExit(
            "error: NEWSLETTER_WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR (an empty directory of this "
            "worker's own), so that the counts of every pool process add up"
        )
    from prometheus_client import start_http_server

    from newsletter import metrics  # after the directory exists: each metric opens its file there

    metrics.clear_stale(directory)
    start_http_server(settings.worker_metrics_port, settings.worker_metrics_host, metrics.registry(settings))
    logs.event(
        log, "metrics", f"worker metrics on http://{settings.worker_metrics_host}:{settings.worker_metrics_port}/metrics",
        port=settings.worker_metrics_port,
    )  # fmt: skip


@worker_process_shutdown.connect
def _forget_process(**_: Any) -> None:
    """A pool child exits: its live gauges (open SMTP connections) stop counting."""
    if get_settings().prometheus_multiproc_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
