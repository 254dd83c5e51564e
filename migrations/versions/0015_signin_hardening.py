"""sign-up policy and sign-in hardening

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 19:30:00

Placeholder reserved for issue 14; filled in by the change that needs it.
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
