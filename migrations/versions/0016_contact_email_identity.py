"""one contact per address: identity is lower(email)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 19:30:00

Placeholder reserved for issue 14; filled in by the change that needs it.
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
