"""dry runs: jobs that write nothing and take no write sequence, the would-be rows they carry between chunks

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sync_jobs", sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.alter_column("sync_jobs", "seq", existing_type=sa.BigInteger(), nullable=True)
    op.create_check_constraint(op.f("ck_sync_jobs_dry_run_takes_no_seq"), "sync_jobs", "dry_run = (seq IS NULL)")
    op.add_column("sync_jobs", sa.Column("names_ids", sa.Boolean(), server_default=sa.text("true"), nullable=False))
    op.create_table(
        "dry_run_rows",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("row_id", sa.Text(), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["sync_jobs.id"], name=op.f("fk_dry_run_rows_job_id_sync_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "row_id", name=op.f("pk_dry_run_rows")),
    )
    op.add_column(
        "purged_record_counts",
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.drop_constraint(op.f("pk_purged_record_counts"), "purged_record_counts", type_="primary")
    op.create_primary_key(op.f("pk_purged_record_counts"), "purged_record_counts", ["outcome", "dry_run"])


def downgrade() -> None:
    # Before this revision every job was a real one: dry runs (and the purged counts of their records) go.
    op.execute("DELETE FROM purged_record_counts WHERE dry_run")
    op.drop_constraint(op.f("pk_purged_record_counts"), "purged_record_counts", type_="primary")
    op.drop_column("purged_record_counts", "dry_run")
    op.create_primary_key(op.f("pk_purged_record_counts"), "purged_record_counts", ["outcome"])
    op.drop_table("dry_run_rows")
    op.execute("DELETE FROM sync_jobs WHERE dry_run")
    op.drop_constraint(op.f("ck_sync_jobs_dry_run_takes_no_seq"), "sync_jobs", type_="check")
    op.alter_column("sync_jobs", "seq", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column("sync_jobs", "names_ids")
    op.drop_column("sync_jobs", "dry_run")
