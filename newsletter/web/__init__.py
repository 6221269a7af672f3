"""The FastAPI application: public subscriber pages, tracking endpoints and the admin REST API."""

from newsletter.web.app import create_app, create_served_app

__all__ = ["create_app", "create_served_app"]
