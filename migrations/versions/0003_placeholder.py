"""placeholder revision (empty) so that 0005 (segments) has its parent; replace with the real 0003

Revision ID: 0003
Revises: 0002
"""
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
