"""Retention: data past the spec's retention periods (section 6) is removed on a schedule."""
import datetime as dt

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import EmailEvent, Invitation
from nudge.models.types import utcnow
from nudge.services import auth, mfa
from nudge.services.imports import move_legacy_uploads

EMAIL_EVENT_RETENTION = dt.timedelta(days=730)
INVITATION_RETENTION = dt.timedelta(days=30)


def purge_expired_invitations(now):
    result = db.session.execute(sa.delete(Invitation).where(
        Invitation.accepted_at.is_(None), Invitation.expires_at < now - INVITATION_RETENTION))
    return result.rowcount


def purge_old_email_events(now):
    result = db.session.execute(sa.delete(EmailEvent).where(EmailEvent.created_at < now - EMAIL_EVENT_RETENTION))
    return result.rowcount


def purge_deleted_contacts(now):
    """Contacts soft-deleted more than 30 days ago are gone for good (spec section 6)."""
    from nudge.services.contacts import purge_deleted_contacts as purge
    return purge(now)


def purge_abandoned_uploads(now):
    """Uploads never mapped and started within a day (imported here: imports imports much)."""
    from nudge.services.imports import purge_abandoned_uploads as purge
    return purge(now)


def move_legacy_import_uploads(now):
    """Import CSVs left in the public uploads folder by an older version move to the private one."""
    return move_legacy_uploads()


def fail_stalled_imports(now):
    from nudge.services.imports import fail_stalled_imports as fail
    return fail(now)


def purge_sign_in_records(now):
    """Failed-attempt rows past their lock and TOTP codes too old to be valid again."""
    return auth.purge_login_attempts(now) + mfa.purge_used_codes(now)


def run_housekeeping(now=None):
    """Run every retention step; returns how many rows each removed."""
    now = now or utcnow()
    summary = {
        "invitations": purge_expired_invitations(now),
        "email_events": purge_old_email_events(now),
        "contacts": purge_deleted_contacts(now),
        "uploads": purge_abandoned_uploads(now),
        "stalled_imports": fail_stalled_imports(now),
        "sign_in_records": purge_sign_in_records(now),
        "legacy_import_uploads": move_legacy_import_uploads(now),
    }
    db.session.commit()
    return summary
