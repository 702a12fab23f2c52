"""partners: each partner's own request budget

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("partners", sa.Column("rate_limit_per_second", sa.Integer(), nullable=True))
    op.add_column("partners", sa.Column("rate_limit_burst", sa.Integer(), nullable=True))
    op.create_check_constraint(
        "rate_limit_not_negative", "partners", "rate_limit_per_second >= 0 AND rate_limit_burst >= 0"
    )


def downgrade() -> None:
    op.drop_constraint("rate_limit_not_negative", "partners", type_="check")
    op.drop_column("partners", "rate_limit_burst")
    op.drop_column("partners", "rate_limit_per_second")
