"""placeholder revision (empty) so that 0005 (segments) has its parent; replace with the real 0004

Revision ID: 0004
Revises: 0003
"""
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
