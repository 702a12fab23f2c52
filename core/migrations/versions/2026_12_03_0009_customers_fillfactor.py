"""customers: pages filled to half, so that a replace is a HOT update

A sync replaces a customer wholly, and a partner replaces many of a business's customers at once (a nightly
re-sync). A replace changes no indexed column of the common record (its external_id and email address stay), so
PostgreSQL can write the new version on the same page without touching any of the table's four indexes (a HOT
update), if the page has room for it. Pages filled to the brim give it none: every replace then wrote a new entry
in every index, and was PostgreSQL's largest cost of a batch. Pages half filled hold a new version of every row on
them, so even a replace of every customer of a business in one transaction stays HOT; the old versions are pruned
from the page once no transaction sees them, which makes room for the next replace.

The heap takes up to twice the room (the indexes do not grow); no read of the service scans it. Only pages
written from now on are left half empty: an existing deployment's table gets there as its rows are rewritten, or
at once with `VACUUM FULL customers` (which locks the table while it runs).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE customers SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE customers RESET (fillfactor)")
