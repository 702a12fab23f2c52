"""customers: their business and partner no longer checked row by row; deleting a business deletes its customers

A foreign key is checked by a trigger for every row inserted: two per customer (its business, its partner), a
third of what PostgreSQL spends writing a created customer beyond the rules' own indexes (docs/performance.md).
Neither parent is ever deleted by the service, and every write of customers names one business that exists: the
one statement that inserts customers (core.records.repository.write_plan) locks that business first, once a
statement (FOR KEY SHARE, as a foreign key's check would, once a row), and inserts nothing if it is gone. What the
cascade did is kept by a trigger on the parent side, which costs a customer's insert nothing: a deleted business
(or a deleted partner, whose businesses cascade) takes its customers with it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_customers_business_id_businesses", "customers", type_="foreignkey")
    op.drop_constraint("fk_customers_partner_id_partners", "customers", type_="foreignkey")
    op.execute(
        """
        CREATE FUNCTION delete_business_customers() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM customers WHERE business_id = OLD.id;
            RETURN OLD;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER tr_businesses_delete_customers AFTER DELETE ON businesses "
        "FOR EACH ROW EXECUTE FUNCTION delete_business_customers()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tr_businesses_delete_customers ON businesses")
    op.execute("DROP FUNCTION delete_business_customers()")
    # Rows whose owner is gone (none, while the trigger held) would make the foreign keys fail: they go first.
    op.execute("DELETE FROM customers c WHERE NOT EXISTS (SELECT 1 FROM businesses b WHERE b.id = c.business_id)")
    op.create_foreign_key(
        "fk_customers_business_id_businesses", "customers", "businesses", ["business_id"], ["id"], ondelete="CASCADE"
    )
    op.create_foreign_key(
        "fk_customers_partner_id_partners", "customers", "partners", ["partner_id"], ["id"], ondelete="CASCADE"
    )
