"""Celery entry point: `celery -A worker worker` and `celery -A worker beat` find `app` here."""

from worker.app import app

__all__ = ["app"]
