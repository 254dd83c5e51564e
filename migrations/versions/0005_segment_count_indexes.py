"""segments: index-only segment counts (names, email domain, subscription and creation dates)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 05:00:00

docs/performance.md ("Segments") has the figures behind each index. A segment count always says
account_id = ? AND status <> 'deleted' AND <rule>; PostgreSQL answers it from the index alone (no
contacts heap read) only when the index holds every column the query mentions, so each index below
carries status, and an expression index also carries the column behind the expression. They are not
partial: PostgreSQL ignores the statistics of a partial index's expressions, and without them it
misjudges how many contacts a name or a domain matches.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# PostgreSQL: text_pattern_ops makes starts_with (LIKE 'x%') a range scan whatever the collation. Email
# ends_with "@domain" compiles to an equality on the text after the address's last "@" (split_part with a
# negative position: PostgreSQL 14 or later; nudge/services/segments.py); the address itself rides along
# (INCLUDE) for index-only scans. Keyed by domain, new contacts are appended at the end of their domain's
# run whatever order a list arrives in, so imports pay little for it.
POSTGRESQL = {
    'ix_contacts_segment_first_name': "(account_id, lower(first_name) text_pattern_ops, first_name, status)",
    'ix_contacts_segment_last_name': "(account_id, lower(last_name) text_pattern_ops, last_name, status)",
    'ix_contacts_segment_email_domain': "(account_id, split_part(lower(email), '@', -1)) INCLUDE (email, status)",
}
# SQLite (which has no split_part) gets the name indexes without the PostgreSQL operator class.
SQLITE = {
    'ix_contacts_segment_first_name': ['account_id', sa.text('lower(first_name)'), 'first_name', 'status'],
    'ix_contacts_segment_last_name': ['account_id', sa.text('lower(last_name)'), 'last_name', 'status'],
}


def upgrade():
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_contacts_account_created')
        batch_op.create_index('ix_contacts_account_created', ['account_id', 'created_at', 'status'], unique=False)
        batch_op.create_index('ix_contacts_segment_subscribed', ['account_id', 'subscription_date', 'status'],
                              unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for name, definition in POSTGRESQL.items():
            op.execute(f"CREATE INDEX {name} ON contacts {definition}")
        # Statistics of the new expressions now, not at the next auto-analyze (which a table that rarely
        # changes may not see for weeks): without them the planner guesses 0.5 % for any name or domain.
        op.execute("ANALYZE contacts")
    else:
        with op.batch_alter_table('contacts', schema=None) as batch_op:
            for name, columns in SQLITE.items():
                batch_op.create_index(name, columns, unique=False)


def downgrade():
    names = POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        for name in names:
            batch_op.drop_index(name)
        batch_op.drop_index('ix_contacts_segment_subscribed')
        batch_op.drop_index('ix_contacts_account_created')
        batch_op.create_index('ix_contacts_account_created', ['account_id', 'created_at'], unique=False)
