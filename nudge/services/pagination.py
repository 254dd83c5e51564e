"""One page of a query: the rows and the total, for the dashboard's and the API's list helpers."""
import sqlalchemy as sa

from nudge.extensions import db


def count_rows(query):
    return db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery()))


def fetch_page(query, page, per_page):
    """Rows of a 1-based page of a select that has a stable ORDER BY."""
    return db.session.scalars(query.limit(per_page).offset((page - 1) * per_page)).all()
