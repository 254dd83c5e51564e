"""The audit log (spec section 5): who did what, from where, to which resources."""
import ipaddress

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import AuditLog, User

ACTIONS = (
    "login.succeeded", "login.failed", "login.locked", "logout",
    "mfa.enabled", "mfa.disabled", "mfa.reset", "mfa.recovery_code_used", "mfa.recovery_codes_regenerated",
    "password.changed", "account.created", "account.updated", "account.email_confirmed", "signup.email_taken",
    "team.invited", "team.invitation_revoked", "team.joined", "team.role_changed", "team.removed",
    "api_client.created", "api_client.revoked", "api_client.handed_over",
    "sending.updated", "sending_domain.added", "sending_domain.removed", "sending_domain.verified",
    "sending_domain.unverified", "sending_domain.key_changed", "sender.added", "sender.confirmed", "sender.removed",
    "contact.exported", "contact.imported",
    "campaign.sent", "campaign.scheduled", "campaign.cancelled", "campaign.deleted",
)


def _clean_ip(ip):
    try:
        return str(ipaddress.ip_address(ip)) if ip else None
    except ValueError:
        return None


def record(action, *, account_id, actor=None, ip=None, resources=(), meta=None, actor_label=None):
    """Add an audit entry to the session; the calling service commits it with its own change.

    actor is a User, an ApiActor or None; actor_label names it when there is no such object
    (a failed login for an address that is not a user)."""
    entry = AuditLog(
        account_id=account_id,
        user_id=actor.id if isinstance(actor, User) else None,
        actor=actor_label or (actor.label if actor is not None else None),
        action=action,
        ip_address=_clean_ip(ip),
        resources=list(resources),
        meta=meta or {},
    )
    db.session.add(entry)
    return entry


def list_entries(account_id, *, action=None, actor=None, since=None, until=None):
    """A query of one account's audit entries, newest first, optionally filtered."""
    query = sa.select(AuditLog).where(AuditLog.account_id == account_id)
    if action:
        if action.endswith(".*") or "." not in action:
            query = query.where(AuditLog.action.like(action.rstrip(".*") + ".%"))
        else:
            query = query.where(AuditLog.action == action)
    if actor:
        query = query.where(AuditLog.actor.ilike(f"%{actor}%"))
    if since:
        query = query.where(AuditLog.created_at >= since)
    if until:
        query = query.where(AuditLog.created_at < until)
    return query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
