"""events: the campaign index holds campaign events only

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 17:45:00

idx_email_events_campaign (campaign_id, event_type) had an entry for every event, including the contact
events that have no campaign (contact.subscribed for each imported contact, tag changes, updates, ...). No
query looks those up by a missing campaign: every reader asks for campaign_id = X, which implies
campaign_id IS NOT NULL, so both PostgreSQL and SQLite still use the partial index for it (and for the
cascade when a campaign is deleted). Without the dead weight a contact event costs one index entry less;
migration 0010 made each event's entry in idx_email_events_contact wider, which an import of 300,000
contacts felt (docs/performance.md, "Import").

PostgreSQL builds the new index CONCURRENTLY beside the old one, so events go on being written during the
build, then swaps the names. SQLite recreates it in place.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

INDEX = "idx_email_events_campaign"
BUILDING = "idx_email_events_campaign_building"
COLUMNS = ["campaign_id", "event_type"]
CAMPAIGN_EVENTS = "campaign_id IS NOT NULL"


def _rebuild(where):
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="email_events")
        op.create_index(INDEX, "email_events", COLUMNS, sqlite_where=sa.text(where) if where else None)
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {BUILDING}")  # an interrupted earlier attempt
        op.execute(f"CREATE INDEX CONCURRENTLY {BUILDING} ON email_events ({', '.join(COLUMNS)})"
                   + (f" WHERE {where}" if where else ""))
    op.execute(f"DROP INDEX {INDEX}")
    op.execute(f"ALTER INDEX {BUILDING} RENAME TO {INDEX}")


def upgrade():
    _rebuild(CAMPAIGN_EVENTS)


def downgrade():
    _rebuild(None)
