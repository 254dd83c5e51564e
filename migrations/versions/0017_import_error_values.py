"""import_errors.value: the rejected value of a row, shown beside the reason

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 21:40:00

The import error report (dashboard, errors CSV, API) shows the value a row was refused for. Errors stored
before this have none (NULL) and are shown without one.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('import_errors') as batch_op:
        batch_op.add_column(sa.Column('value', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('import_errors') as batch_op:
        batch_op.drop_column('value')
