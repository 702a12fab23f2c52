"""Where the broker is: `REDIS_URL`."""

from __future__ import annotations

from core.config import NotConfigured, settings


def broker_url() -> str:
    """The Redis URL Celery, the upload slots, the request budgets and the health check use; `NotConfigured`
    when it is unset."""
    if not settings.redis_url:
        raise NotConfigured("REDIS_URL is not set")
    return settings.redis_url
