"""imports: heartbeat

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 04:11:31.053811

"""
from alembic import op
import sqlalchemy as sa

# Autogenerate writes JSONB(astext_type=Text()): keep Text importable.
from sqlalchemy import Text  # noqa: F401

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
