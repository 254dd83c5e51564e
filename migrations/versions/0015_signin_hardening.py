"""sign-up policy and sign-in hardening: confirmed account emails, per-address lockout, used TOTP codes

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 19:30:00

- accounts.email_confirmed_at: NUDGE_SIGNUP=open accounts may send only once their owner confirmed the
  address; every account that exists already counts as confirmed.
- first_signup: the one-row guard that lets only one first sign-up win (NUDGE_SIGNUP=first).
- login_attempts: failed sign-ins per (typed email, client address), replacing the per-user counter
  (users.failed_login_count, users.locked_until), which let a stranger lock the owner out.
- used_totp_codes: TOTP steps already used, for installs without Redis.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_confirmed_at', sa.DateTime(), nullable=True))
    op.execute(sa.text("UPDATE accounts SET email_confirmed_at = created_at"))

    op.create_table(
        'first_signup',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('account_id', sa.Uuid(), nullable=False),
        sa.Column('created_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
        sa.CheckConstraint('id = 1', name=op.f('ck_first_signup_single_row')),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_first_signup_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_first_signup')),
    )
    op.create_table(
        'login_attempts',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('login', sa.String(length=255), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=False),
        sa.Column('failures', sa.Integer(), server_default='0', nullable=False),
        sa.Column('locked_until', sa.DateTime(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempts')),
        sa.UniqueConstraint('login', 'ip', name='uq_login_attempts_login_ip'),
    )
    op.create_table(
        'used_totp_codes',
        sa.Column('user_id', sa.Uuid(), nullable=False),
        sa.Column('step', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('used_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_used_totp_codes_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'step', name=op.f('pk_used_totp_codes')),
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('locked_until')
        batch_op.drop_column('failed_login_count')


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failed_login_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('locked_until', sa.DateTime(), nullable=True))
    op.drop_table('used_totp_codes')
    op.drop_table('login_attempts')
    op.drop_table('first_signup')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('email_confirmed_at')
