"""sending domains, verified senders and test sends; DKIM keys move from the account to its domains

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 19:30:00

An account had one DKIM key (sending_configs.dkim_domain/selector/key). Each sending domain now has its
own: the existing key becomes the key of a sending domain row for its domain, with the same selector and
the same (still encrypted) key, so the mail it signed is signed exactly as before and the DNS record the
account published stays right. That domain starts unverified (its ownership token is new); it is only
required to be verified where the operator requires verified domains (NUDGE_SIGNUP=open,
NUDGE_REQUIRE_VERIFIED_DOMAINS=1). The downgrade puts each account's oldest domain key back.
"""
import secrets
import uuid

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def _tables():
    configs = sa.table("sending_configs", sa.column("account_id", sa.Uuid()), sa.column("dkim_domain", sa.String()),
                       sa.column("dkim_selector", sa.String()), sa.column("dkim_key_encrypted", sa.Text()))
    domains = sa.table("sending_domains", sa.column("id", sa.Uuid()), sa.column("account_id", sa.Uuid()),
                       sa.column("domain", sa.String()), sa.column("verify_token", sa.String()),
                       sa.column("checks", JSON), sa.column("dkim_selector", sa.String()),
                       sa.column("dkim_key_encrypted", sa.Text()), sa.column("created_at", sa.DateTime()))
    return configs, domains


def upgrade():
    op.create_table('sending_domains',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('verify_token', sa.String(length=64), nullable=False),
    sa.Column('verified_at', sa.DateTime(), nullable=True),
    sa.Column('checked_at', sa.DateTime(), nullable=True),
    sa.Column('checks', JSON, server_default='{}', nullable=False),
    sa.Column('dkim_selector', sa.String(length=63), nullable=False),
    sa.Column('dkim_key_encrypted', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.Column('updated_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_sending_domains_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sending_domains')),
    sa.UniqueConstraint('account_id', 'domain', name='uq_sending_domains_account_domain')
    )
    op.create_table('verified_senders',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(), nullable=True),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_verified_senders_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_verified_senders')),
    sa.UniqueConstraint('account_id', 'email', name='uq_verified_senders_account_email')
    )
    op.create_table('test_sends',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=False),
    sa.Column('emails', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_test_sends_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_test_sends'))
    )
    with op.batch_alter_table('test_sends', schema=None) as batch_op:
        batch_op.create_index('ix_test_sends_account_sent', ['account_id', 'sent_at'], unique=False)

    bind = op.get_bind()
    configs, domains = _tables()
    rows = bind.execute(sa.select(configs.c.account_id, configs.c.dkim_domain, configs.c.dkim_selector,
                                  configs.c.dkim_key_encrypted)
                        .where(configs.c.dkim_domain.is_not(None), configs.c.dkim_key_encrypted.is_not(None))).all()
    for account_id, domain, selector, key in rows:
        bind.execute(domains.insert().values(
            id=uuid.uuid4(), account_id=account_id, domain=domain.lower(), verify_token=secrets.token_hex(16),
            checks={}, dkim_selector=selector or "nudge", dkim_key_encrypted=key, created_at=sa.func.now()))
    with op.batch_alter_table('sending_configs', schema=None) as batch_op:
        batch_op.drop_column('dkim_key_encrypted')
        batch_op.drop_column('dkim_selector')
        batch_op.drop_column('dkim_domain')


def downgrade():
    with op.batch_alter_table('sending_configs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dkim_domain', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('dkim_selector', sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column('dkim_key_encrypted', sa.Text(), nullable=True))
    bind = op.get_bind()
    configs, domains = _tables()
    rows = bind.execute(sa.select(domains.c.account_id, domains.c.domain, domains.c.dkim_selector,
                                  domains.c.dkim_key_encrypted)
                        .where(domains.c.dkim_key_encrypted.is_not(None))
                        .order_by(domains.c.account_id, domains.c.created_at)).all()
    seen = set()
    for account_id, domain, selector, key in rows:
        if account_id in seen:
            continue
        seen.add(account_id)
        bind.execute(configs.update().where(configs.c.account_id == account_id)
                     .values(dkim_domain=domain, dkim_selector=selector, dkim_key_encrypted=key))
    with op.batch_alter_table('test_sends', schema=None) as batch_op:
        batch_op.drop_index('ix_test_sends_account_sent')
    op.drop_table('test_sends')
    op.drop_table('verified_senders')
    op.drop_table('sending_domains')
