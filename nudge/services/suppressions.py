"""The suppression list: addresses an account must never mail again, kept even when the contact is deleted."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import SUPPRESSION_REASONS, Suppression
from nudge.models.types import new_id, utcnow
from nudge.services.dialect import insert


def is_suppressed(account_id, email):
    return db.session.scalar(sa.select(sa.func.count()).select_from(Suppression).where(
        Suppression.account_id == account_id, Suppression.email == email)) > 0


def suppressed(account_id, email_column):
    """A SQL condition: email_column is on the account's suppression list."""
    return sa.exists(sa.select(1).where(Suppression.account_id == account_id, Suppression.email == email_column))


def suppress(account_id, emails, reason, note=None):
    """Add (already normalised) addresses; ones already listed keep their first reason. Returns how many were new."""
    if reason not in SUPPRESSION_REASONS:
        raise ValueError(f"unknown suppression reason {reason!r}")
    rows = [{"id": new_id(), "account_id": account_id, "email": email, "reason": reason, "note": note, "created_at": utcnow()}
            for email in dict.fromkeys(emails)]
    if not rows:
        return 0
    statement = insert(Suppression).on_conflict_do_nothing(index_elements=["account_id", "email"])
    result = db.session.connection().execute(statement, rows)
    return max(result.rowcount or 0, 0)
