"""Where the broker is: `REDIS_URL`, or this folder's embedded Redis."""

from __future__ import annotations

from core.config import settings
from core.embedded import embedded_redis_url


def broker_url() -> str:
    """The Redis URL Celery and the health check use."""
    if settings.redis_url:
        return settings.redis_url
    url = embedded_redis_url(settings.data_dir)
    if url is None:
        raise RuntimeError("REDIS_URL is not set and no embedded Redis runs here; start `pfsync dev` or set REDIS_URL")
    settings.redis_url = url
    return url
