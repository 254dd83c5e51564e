"""events: drop ix_email_events_account_created, which no query needs

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 19:00:00

ix_email_events_account_created (account_id, created_at) came with the first schema. Every query that reads
events of an account over a time range also names the event type: the monthly sending count
(email.sent), the bounce summary (email.bounced, email.complained) and segment engagement rules. Those
read ix_email_events_segments (account_id, event_type, created_at, contact_id), which also serves an
account's cascade delete. The retention purge reads by created_at alone, which this index could not
serve either. Without it every event (an email sent, an open, a click, a contact imported) writes one
index entry less, and the database keeps one index of every event less (docs/performance.md, "Import").
"""
from alembic import op
import sqlalchemy as sa  # noqa: F401 - the migration template's import

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

INDEX = "ix_email_events_account_created"
COLUMNS = ["account_id", "created_at"]


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    else:
        op.drop_index(INDEX, table_name="email_events")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")  # an interrupted earlier attempt
            op.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON email_events ({', '.join(COLUMNS)})")
    else:
        op.create_index(INDEX, "email_events", COLUMNS)
