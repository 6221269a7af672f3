"""Logging for every process (web, CLI, Celery worker): human-readable lines, or one JSON object per line.

`event()` logs a line with structured fields: in text form they follow the message as key=value, in
JSON form (NEWSLETTER_LOG_FORMAT=json) they are keys of the object beside time, level, logger and message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from newsletter.config import Settings

_FIELDS = "fields"  # the LogRecord attribute that carries an event's fields


def event(logger: logging.Logger, name: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log `message` as event `name` with `fields` (bounded values: ids, counts, seconds, host names)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", message, extra={_FIELDS: {"event": name, **fields}})


class TextFormatter(logging.Formatter):
    """`2026-12-01 17:00:00,123 INFO newsletter.worker: batch sent campaign=3 first_id=1 ... sent=500`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, _FIELDS, None)
        if fields:
            extras = " ".join(f"{key}={_text(value)}" for key, value in fields.items() if key != "event")
            line = f"{line} {extras}" if extras else line
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the event's fields, and the
    exception's traceback as `exc_info` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in (getattr(record, _FIELDS, None) or {}).items():
            body.setdefault(key, value)
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


def formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else TextFormatter()


def configure(settings: Settings, *, stream: Any = None) -> None:
    """Route every logger (ours, Celery's, uvicorn's) through one stderr handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text
