"""segments: engagement rules checked per contact from the events' contact index alone

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 16:50:00

A segment like "opened ever, and tag X" filters the tag's contacts by their events (an EXISTS semi join,
nudge/services/segments.py, _Counter). The only index that answered it index-only was the engagement one,
(account_id, event_type, created_at, contact_id): PostgreSQL read all 2.5 M "opened" entries of the
account into a hash and probed it with the tag's 115,000 contacts (897-1,033 ms p50, 1,026-1,463 ms p95 on
1,000,000 contacts and 11,000,000 events; docs/performance.md, "Segments"). The spec's idx_email_events_contact
(contact_id, created_at) could look each contact up, but had to read the table for every event's type and
account.

This migration keeps that index's name and key and adds event_type and account_id as included columns, so
each contact is one index-only lookup of its own few events, and the planner picks that nested loop itself
whenever the set of contacts is small next to the events (the same query: 347-435 ms p50, 380-457 ms p95). The
index grows (426 to 808 MB on those 11,000,000 events); inserting 100,000 events took as long with it
(6.5-6.8 s against 6.7-7.2 s) since the number of index entries is unchanged.

PostgreSQL builds the new index CONCURRENTLY beside the old one, so tracking and sending go on writing
events during the build, then swaps the names. SQLite has no INCLUDE: its index stays as it was.
"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

INDEX = "idx_email_events_contact"
BUILDING = "idx_email_events_contact_building"


def _swap(include):
    columns = "(contact_id, created_at)" + (" INCLUDE (event_type, account_id)" if include else "")
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {BUILDING}")  # an interrupted earlier attempt
        op.execute(f"CREATE INDEX CONCURRENTLY {BUILDING} ON email_events {columns}")
    op.execute(f"DROP INDEX {INDEX}")
    op.execute(f"ALTER INDEX {BUILDING} RENAME TO {INDEX}")


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        _swap(include=True)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        _swap(include=False)
