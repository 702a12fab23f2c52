"""Settings, read once from the environment (and a `.env` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalise_database_url(url: str) -> str:
    """Point any PostgreSQL URL at the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class NotConfigured(RuntimeError):
    """A setting the process needs is unset (the production processes never start a server of their own)."""


class Settings(BaseSettings):
    """Every setting of the service; README "Configuration" documents each one."""

    model_config = SettingsConfigDict(env_prefix="PFSYNC_", env_file=".env", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))

    data_dir: Path = Path(".pfsync")
    max_batch_records: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    legacy_max_batch_records: int = Field(default=1000, ge=1)
    job_retention_days: int = Field(default=30, ge=1)
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    chunk_size: int = Field(default=2000, ge=1, le=20_000)
    job_parallelism: int = Field(default=2, ge=1)
    max_active_jobs_per_partner: int = Field(default=4, ge=1)
    lease_seconds: int = Field(default=30, ge=2, le=3600)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    max_chunk_attempts: int = Field(default=5, ge=1)
    max_wait_seconds: int = Field(default=60, ge=0)
    db_pool_size: int = Field(default=10, ge=1)
    # How long a request waits for a free database connection before it is answered 503 (SPEC §7).
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=30)
    # Threads per API process for sync routes (the GIL runs one at a time; the rest wait on I/O or the pool).
    api_threads: int = Field(default=100, ge=4, le=1000)
    # Abuse limits (SPEC §7): batch uploads of one partner in progress at once, and how long a request body may
    # stall between two of its parts before the request is answered 408.
    max_concurrent_uploads_per_partner: int = Field(default=4, ge=1)
    body_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    # A batch body past this many bytes is spooled to a temporary file instead of memory.
    spool_memory_bytes: int = Field(default=4 * 1024 * 1024, ge=0)
    # Each partner's request budget, shared by every API process through Redis (SPEC §8): this many requests a
    # second sustained, in bursts of up to `rate_limit_burst`; 0 turns it off. `pfsync partner budget` sets
    # one partner's own.
    rate_limit_per_second: int = Field(default=100, ge=0)
    rate_limit_burst: int = Field(default=200, ge=0)
    # Worker processes run at this CPU niceness (0-19; 0: as the API), so that on a shared host a batch being
    # processed yields the CPU to interactive requests (single syncs, polls) rather than slowing them.
    worker_nice: int = Field(default=10, ge=0, le=19)
    log_level: str = "INFO"
    log_json: bool = True
    queue_name: str = "pfsync"
    # /metrics: chunk processing time is summarised over the chunks processed in this trailing window.
    metrics_window_seconds: int = Field(default=300, ge=10)
    # Completion webhooks (docs/operations.md): delivered by the scheduler process, retried with exponential
    # backoff (base, doubling, capped at the max interval) for `webhook_retry_hours` after the job finished.
    webhook_require_https: bool = True
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0)
    webhook_retry_max_interval_seconds: float = Field(default=3 * 3600.0, gt=0)
    webhook_retry_hours: float = Field(default=24.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    # The operator console (SPEC §10): how long a sign-in lasts; after this many failed sign-ins in a row, a
    # username is refused for the lockout (counted from its last failure), against password guessing.
    console_session_hours: float = Field(default=12.0, gt=0, le=720)
    console_login_max_failures: int = Field(default=10, ge=1)
    console_login_lockout_seconds: int = Field(default=300, ge=1)
    # Password checks (scrypt, about 0.2 s of CPU each) a process runs at once; 8 more sign-ins wait up to 3 s.
    console_password_checks: int = Field(default=1, ge=1, le=64)

    @field_validator("database_url")
    @classmethod
    def _normalise_dsn(cls, value: str | None) -> str | None:
        return normalise_database_url(value) if value else value


settings = Settings()
