"""`newsletter serve`: the web app (public pages, tracking, admin UI and API) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from newsletter import metrics
from newsletter.cli.console import settings


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes; one per CPU core serves the most requests.")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (off by default: the reverse proxy in front usually does).")
    ] = False,
) -> None:
    """Run the web app (public pages, tracking, admin API)."""
    current = settings()  # fail early on bad configuration
    if current.prometheus_multiproc_dir is not None:  # a fresh count per start, summed over the processes
        current.prometheus_multiproc_dir.mkdir(parents=True, exist_ok=True)
        metrics.clear_stale(current.prometheus_multiproc_dir)
    uvicorn.run(
        "newsletter.web:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=None,  # the app's own format (newsletter/logs.py), set up in each process by the factory
        access_log=access_log,
        # X-Forwarded-For is read by web.pages.client_ip, from TRUSTED_PROXIES only; uvicorn's own
        # handling would believe it from 127.0.0.1, which is anyone on the machine.
        proxy_headers=False,
        # uvicorn kills a worker that has not answered its supervisor within this many seconds: the
        # default 5 is shorter than importing the app takes on a loaded machine, so workers died in a loop
        timeout_worker_healthcheck=60,
    )
