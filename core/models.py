"""ORM models. Uniqueness rules live in the database itself, so no race can break them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# One counter orders every accepted write (a single sync, a batch job): SPEC §3 rule 7.
write_seq = Sequence("write_seq", metadata=Base.metadata)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Partner(Base):
    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("rate_limit_per_second >= 0 AND rate_limit_burst >= 0", name="rate_limit_not_negative"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    # The partner's own request budget (`pfsync partner budget`); NULL: the service's default (SPEC §8).
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), nullable=False)
    secret_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Kept to the minute by the API, never written by every request (core.partners.service).
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Business(Base):
    __tablename__ = "businesses"
    __table_args__ = (UniqueConstraint("partner_id", "external_id", name="uq_businesses_partner_external_id"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), nullable=False)
    external_id: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


Index("ix_businesses_partner_id_id", Business.partner_id, Business.id)


class Customer(Base):
    __tablename__ = "customers"
    # Pages half filled: a replace's new version fits on its page, a HOT update (migration 0009).
    __table_args__ = (
        UniqueConstraint("business_id", "external_id", name="uq_customers_business_external_id"),
        {"postgresql_with": {"fillfactor": "50"}},
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    # Its business's and that business's partner, without foreign keys: checked once a statement rather than once a
    # row (core.records.repository.write_plan), and a deleted business deletes its customers by a trigger of its
    # own (migration 0007).
    business_id: Mapped[str] = mapped_column(Text, nullable=False)
    partner_id: Mapped[str] = mapped_column(Text, nullable=False)
    external_id: Mapped[str | None] = mapped_column(Text)
    email_address: Mapped[str | None] = mapped_column(Text)
    phone_number: Mapped[str | None] = mapped_column(Text)
    full_name: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    unsubscribed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


Index("ix_customers_business_id_id", Customer.business_id, Customer.id)
Index(
    "uq_customers_business_email_lower",
    Customer.business_id,
    func.lower(Customer.email_address),
    unique=True,
)


class SyncJob(Base):
    __tablename__ = "sync_jobs"
    # A real job is an accepted write and takes a write sequence; a dry run writes nothing and takes none (SPEC §9).
    __table_args__ = (CheckConstraint("dry_run = (seq IS NULL)", name="dry_run_takes_no_seq"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    business_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    # Whether some record of the batch names its target by `id`: without, a dry run has fewer would-be rows to
    # carry from one chunk to the next (core.records.rules.NamedKeys). Set at acceptance.
    names_ids: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    admitted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    processed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    created: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    replaced: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    unchanged: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    superseded: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    cancelled: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Chunks given up on after too many attempts: the job then ends `failed`.
    abandoned_chunks: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    # The API key that submitted the job (null for jobs accepted before keys were recorded).
    api_key_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


Index("ix_sync_jobs_partner_id_id", SyncJob.partner_id, SyncJob.id)
Index(
    "ix_sync_jobs_unfinished",
    SyncJob.partner_id,
    SyncJob.id,
    postgresql_where=text("finished_at IS NULL"),
)
Index("ix_sync_jobs_finished_at", SyncJob.finished_at)
# The console lists every partner's jobs newest first (ids sort in creation order), filtered by status and/or type.
Index("ix_sync_jobs_status_id", SyncJob.status, SyncJob.id)
Index("ix_sync_jobs_type_id", SyncJob.type, SyncJob.id)
Index("ix_sync_jobs_type_status_id", SyncJob.type, SyncJob.status, SyncJob.id)


class JobChunk(Base):
    """A slice of a job's records: the unit of work a worker claims, and where its results are kept."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("sync_jobs.id", ondelete="CASCADE"), primary_key=True)
    chunk_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_index: Mapped[int] = mapped_column(Integer, nullable=False)
    record_count: Mapped[int] = mapped_column(Integer, nullable=False)
    # One JSON document per line; a line is `null` where the record was rejected at acceptance.
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # {"<offset>": [error, ...]} for records rejected at acceptance (not an object, duplicate, ...).
    rejections: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # JSON array of results in input order, once processed.
    results: Mapped[bytes | None] = mapped_column(LargeBinary)
    outcome_counts: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How long a worker took to apply the chunk; null when it ended without being applied (cancelled, abandoned).
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # {"<error code>": records carrying it}, once processed: a job's errors by code without reading its results.
    error_counts: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


Index(
    "ix_job_chunks_open",
    JobChunk.state,
    JobChunk.lease_until,
    postgresql_where=text("state <> 'done'"),
)
# /metrics summarises the chunks applied in a recent window.
Index("ix_job_chunks_applied_at", JobChunk.processed_at, postgresql_where=text("duration_ms IS NOT NULL"))
# The console's records per second over the last hour: every chunk that got its outcomes, cancelled ones too.
Index("ix_job_chunks_processed_at", JobChunk.processed_at)


class DryRunRow(Base):
    """The would-be state of a stored record that a processed chunk of a dry-run job would have replaced: what the
    job's later chunks see of that record instead of its stored state (SPEC §9). Deleted when the job ends."""

    __tablename__ = "dry_run_rows"

    job_id: Mapped[str] = mapped_column(ForeignKey("sync_jobs.id", ondelete="CASCADE"), primary_key=True)
    row_id: Mapped[str] = mapped_column(Text, primary_key=True)
    # The record's writable properties as the job would leave them (core.records.schemas.WRITABLE).
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)


class PurgedRecordCount(Base):
    """Records of jobs already purged, by outcome, so the records counter of /metrics never goes down."""

    __tablename__ = "purged_record_counts"

    outcome: Mapped[str] = mapped_column(Text, primary_key=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("false"))
    records: Mapped[int] = mapped_column(BigInteger, nullable=False)


class WebhookDelivery(Base):
    """A notification that a job finished, for the partner's webhook: an outbox row written in the transaction
    that finished the job, then delivered (and retried) by the scheduler."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("job_id", "event", name="uq_webhook_deliveries_job_id_event"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("sync_jobs.id", ondelete="CASCADE"), nullable=False)
    event: Mapped[str] = mapped_column(Text, nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    # The exact bytes signed and sent on every attempt.
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # pending -> succeeded | failed
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    # One entry per attempt: {"attempt", "at", "status_code", "error", "duration_ms"}.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


Index("ix_webhook_deliveries_due", WebhookDelivery.next_attempt_at, postgresql_where=text("status = 'pending'"))


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    method: Mapped[str] = mapped_column(Text, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    request_hash: Mapped[str] = mapped_column(Text, nullable=False)
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


Index("ix_idempotency_keys_created_at", IdempotencyKey.created_at)


class Operator(Base):
    """A person who runs the service and signs in to the console (SPEC §10). Not a partner: no API key."""

    __tablename__ = "operators"
    __table_args__ = (CheckConstraint("role IN ('admin', 'viewer')", name="role"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    username: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    # scrypt, with its parameters and salt (core.operators.passwords).
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    # Failed sign-ins in a row, and when the last one was: too many in a short while refuse further attempts.
    failed_logins: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    last_failed_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class OperatorSession(Base):
    """A signed-in console session. The cookie carries a random token; only its SHA-256 is stored, so the table
    cannot be replayed. Signing out deletes the row."""

    __tablename__ = "operator_sessions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), nullable=False)
    # The session's token against cross-site request forgery, in a hidden field of every form.
    csrf_token: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


Index("ix_operator_sessions_operator_id", OperatorSession.operator_id)
Index("ix_operator_sessions_expires_at", OperatorSession.expires_at)
