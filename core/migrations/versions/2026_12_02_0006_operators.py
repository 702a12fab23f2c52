"""operator console: operators, their sessions, each job's key, chunks' error counts, the filters' indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("failed_logins", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_failed_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'viewer')", name=op.f("ck_operators_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("username", name=op.f("uq_operators_username")),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("operator_id", sa.Text(), nullable=False),
        sa.Column("csrf_token", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_sessions_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_sessions")),
    )
    op.create_index("ix_operator_sessions_operator_id", "operator_sessions", ["operator_id"])
    op.create_index("ix_operator_sessions_expires_at", "operator_sessions", ["expires_at"])

    op.add_column("sync_jobs", sa.Column("api_key_id", sa.Text(), nullable=True))
    op.add_column("job_chunks", sa.Column("error_counts", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index("ix_sync_jobs_status_id", "sync_jobs", ["status", "id"])
    op.create_index("ix_sync_jobs_type_id", "sync_jobs", ["type", "id"])
    op.create_index("ix_sync_jobs_type_status_id", "sync_jobs", ["type", "status", "id"])
    op.create_index("ix_job_chunks_processed_at", "job_chunks", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_job_chunks_processed_at", table_name="job_chunks")
    op.drop_index("ix_sync_jobs_type_status_id", table_name="sync_jobs")
    op.drop_index("ix_sync_jobs_type_id", table_name="sync_jobs")
    op.drop_index("ix_sync_jobs_status_id", table_name="sync_jobs")
    op.drop_column("job_chunks", "error_counts")
    op.drop_column("sync_jobs", "api_key_id")
    op.drop_index("ix_operator_sessions_expires_at", table_name="operator_sessions")
    op.drop_index("ix_operator_sessions_operator_id", table_name="operator_sessions")
    op.drop_table("operator_sessions")
    op.drop_table("operators")
