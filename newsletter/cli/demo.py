"""`newsletter demo`: the embedded quick start."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from newsletter import demo as quick_start
from newsletter.cli.console import settings


def demo(
    subscribers: Annotated[int, typer.Option(help="How many demo subscribers.")] = 36,
) -> None:
    """Embedded quick start: a SQLite database, a demo list, the sample digest, sent to the outbox."""
    # The demo prints only its bundled sample, and styles it with markup: unlike every other command's.
    console = Console(highlight=False, soft_wrap=True)
    quick_start.run(settings(), subscribers=subscribers, console=console)
