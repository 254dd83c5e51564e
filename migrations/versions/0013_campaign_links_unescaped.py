"""campaigns: tracked links stored as URLs, not as their HTML spelling

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 19:30:00

campaigns.links holds the targets of a sent campaign's click redirects. They used to be stored as the href
attribute spelled them, so a link written https://shop.example/?a=1&amp;b=2 (the HTML way of writing &)
redirected to "?a=1&amp;b=2": the second query parameter arrived as "amp;b". Links are now stored as
URLs (services.tracking.prepare_html); this converts the links of campaigns sent before, so their emails'
redirects lead to the right place too. Index numbers, and so the emails' click URLs, are unchanged.

The downgrade leaves the URLs as they are: the older code redirects to them correctly.
"""
import html
import json

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

campaigns = sa.table("campaigns", sa.column("id", sa.Uuid()),
                     sa.column("links", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")))


def _as_list(value):
    return json.loads(value) if isinstance(value, str) else value


def upgrade():
    bind = op.get_bind()
    rows = bind.execute(sa.select(campaigns.c.id, campaigns.c.links).where(campaigns.c.links.is_not(None))).all()
    for campaign_id, links in rows:
        links = _as_list(links)
        if not isinstance(links, list):
            continue
        urls = [html.unescape(link) if isinstance(link, str) else link for link in links]
        if urls != links:
            bind.execute(sa.update(campaigns).where(campaigns.c.id == campaign_id).values(links=urls))


def downgrade():
    pass
