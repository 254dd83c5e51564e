"""segments: indexes for segment counts (engagement rules, case-insensitive email)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:20:00

docs/performance.md ("Segments") has the figures behind each index.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    # Engagement rules: EXISTS (... account_id, event_type, created_at >= now - N days, contact_id) is an
    # index-only range scan feeding a hash semi/anti join, on both dialects.
    with op.batch_alter_table('email_events', schema=None) as batch_op:
        batch_op.create_index('ix_email_events_segments', ['account_id', 'event_type', 'created_at', 'contact_id'],
                              unique=False)
    # email eq / in / starts_with compare lower(email): an expression index (SQLite supports them too).
    # On PostgreSQL text_pattern_ops also serves prefix LIKE whatever the database's collation.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_contacts_account_lower_email ON contacts "
                   "(account_id, lower(email) text_pattern_ops)")
    else:
        with op.batch_alter_table('contacts', schema=None) as batch_op:
            batch_op.create_index('ix_contacts_account_lower_email', ['account_id', sa.text('lower(email)')],
                                  unique=False)


def downgrade():
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_contacts_account_lower_email')
    with op.batch_alter_table('email_events', schema=None) as batch_op:
        batch_op.drop_index('ix_email_events_segments')
