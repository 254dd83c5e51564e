"""segments: index-only contact ids for rules on a status other than active

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 11:15:00

A segment count builds an `any` group as the UNION of one id set per branch (nudge/services/segments.py,
_Counter). A branch on contacts' own columns needs the contacts' ids, which none of migration 0005's
indexes holds, so such a branch read the heap: "email ends_with @gmail.com and status unsubscribed" took
the 50,116 unsubscribed contacts from ix_contacts_account_status and read 26,786 heap pages for their
addresses and ids (150-230 ms of the nested bench query; docs/performance.md, "Segments").

ix_contacts_segment_status_other holds (account_id, status) with id and email for the contacts whose
status is not active (unsubscribed, bounced, complained, deleted: about a tenth of a list), so such a branch
is an index-only range (31 ms for the same 10,102 ids). Partial, so that it costs imports nothing: an import
creates active contacts only, and a row outside the predicate gets no index entry (adding id to the email
domain index instead made the branch index-only too, but cost every imported contact 15-20 %). The
predicate is on a plain column, whose statistics the planner has (unlike a partial index's expressions).
On SQLite (no INCLUDE) it is the partial key alone, which keeps both schemas equal to the models.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

INDEX = "ix_contacts_segment_status_other"
WHERE = sa.text("status <> 'active'")


def upgrade():
    # SQLite has no INCLUDE; it gets the (tiny) partial index on the key alone, so both schemas match the model.
    op.create_index(INDEX, 'contacts', ['account_id', 'status'], unique=False, postgresql_include=['id', 'email'],
                    postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade():
    op.drop_index(INDEX, table_name='contacts')
