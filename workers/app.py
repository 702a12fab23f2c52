"""The Celery app. The broker is a doorbell: messages carry ids only, the work lives in PostgreSQL."""

from __future__ import annotations

from typing import Any

import redis.exceptions
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from kombu.transport import redis as kombu_redis

from core import heap, logs
from core.config import settings
from core.db import dispose_engine
from core.ops.broker import broker_url


class _RedisChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # After Redis goes away, Celery still acknowledges (or puts back) the messages of tasks that were running,
        # through channels of the connection it already dropped. kombu then fails on the missing connection with an
        # AttributeError that escapes Celery's reconnect logic and kills the worker ("Unrecoverable error").
        # Raised as a connection error instead, it is what Celery expects: logged, and the worker reconnects. The
        # chunk itself is safe either way (its lease brings it back if its message is gone).
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("this channel's broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, whose channels fail like a lost connection once their connection is gone."""

    Channel = _RedisChannel


celery_app = Celery("pfsync", include=["workers.tasks"])
celery_app.conf.update(
    broker_transport="workers.app:RedisTransport",
    broker_url=settings.redis_url or "redis://",
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 5},
    broker_pool_limit=4,
    task_default_queue=settings.queue_name,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    # A task is acknowledged only once done; a worker killed mid-task gets its message redelivered. The
    # attempt count kept in PostgreSQL (core.jobs.service) stops a poison chunk from looping.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Events on, so Flower and celery-exporter work unchanged.
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    worker_cancel_long_running_tasks_on_connection_loss=False,
)


def configure_broker() -> None:
    """Resolve the broker URL (REDIS_URL or the embedded Redis) just before the app is used."""
    celery_app.conf.broker_url = broker_url()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _reset_process_state(**_: Any) -> None:
    # Engines and pools are per process: never reuse connections inherited from the parent.
    dispose_engine()
    logs.configure(settings.log_level, settings.log_json)
    heap.tune_collector()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _close_engine(**_: Any) -> None:
    dispose_engine()
