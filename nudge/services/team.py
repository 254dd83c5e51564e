"""Team members of an account: invitations, roles, removal.

An invitation is emailed through the server's transactional path (send_invitation, run by a task that gets the
token encrypted); the team page also shows the link once as a fallback. Resending makes a new link (only a hash
is stored) and the earlier one stops working, as does a revoked one.

Removing or demoting a member offers to revoke what they created that outlives their role: their active API
clients and pending invitations (created_by_member lists them; remove_member and change_role revoke the ones
chosen, in the same transaction). Clients kept at a removal are handed over to whoever removed the member.
"""
import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from nudge.errors import Conflict, Forbidden, NotFound, field_error
from nudge.extensions import db
from nudge.models import ROLES, Account, Invitation, User
from nudge.models.types import utcnow
from nudge.services import api_clients, audit, permissions, system_mail
from nudge.services.security import (check_password_strength, decrypt, encrypt, hash_password, hash_token,
                                     new_token)
from nudge.services.validation import normalize_email, require_text, validate_fields

INVITATION_LIFETIME = dt.timedelta(days=7)
INVITE_PATH = "/settings/team/join/"  # settings.accept_invite
EMAIL_TAKEN = "This email already has a NudgeCampaign sign-in."
INVALID_INVITATION = "This invitation link is invalid or has expired. Ask for a new one."
LAST_OWNER = "An account needs at least one owner. Make someone else an owner first."
OWNER_ONLY = "Only an owner can grant the owner role or change an owner."

_ROLE_ORDER = sa.case({role: rank for rank, role in enumerate(ROLES)}, value=User.role, else_=len(ROLES))


def list_members(account_id):
    """The account's members, owners first, then by name."""
    return db.session.scalars(
        sa.select(User).where(User.account_id == account_id)
        .order_by(_ROLE_ORDER, sa.func.lower(sa.func.coalesce(User.name, User.email)), User.email)).all()


def list_invitations(account_id):
    """Invitations not yet accepted (expired ones too, so they can be cleared), newest first."""
    return db.session.scalars(
        sa.select(Invitation).where(Invitation.account_id == account_id, Invitation.accepted_at.is_(None))
        .order_by(Invitation.created_at.desc(), Invitation.id)).all()


def member_labels(account_id, user_ids):
    """{user id: email} for some of the account's members (who created what)."""
    ids = {i for i in user_ids if i}
    if not ids:
        return {}
    return {user.id: user.label for user in db.session.scalars(
        sa.select(User).where(User.account_id == account_id, User.id.in_(ids)))}


def member_count(account_id):
    return db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.account_id == account_id))


def pending_invitation_count(account_id):
    """Invitations that can still be accepted."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Invitation).where(
            Invitation.account_id == account_id, Invitation.accepted_at.is_(None),
            Invitation.expires_at > utcnow()))


def is_expired(invitation, now=None):
    return invitation.expires_at <= (now or utcnow())


def get_member(account_id, member_id):
    member = db.session.scalar(sa.select(User).where(User.account_id == account_id, User.id == _uuid(member_id)))
    if member is None:
        raise NotFound("Team member not found.")
    return member


def invite_member(actor, email, role, *, ip=None):
    """Invite someone with a role; returns (invitation, token). Only the token's hash is stored."""
    permissions.require(actor, "team:write")
    clean = validate_fields({"email": lambda: normalize_email(email), "role": lambda: _check_role(role)})
    email, role = clean["email"], clean["role"]
    if role == "owner" and actor.role != "owner":
        raise Forbidden(OWNER_ONLY)
    if email_taken(email):
        raise Conflict(EMAIL_TAKEN, [{"field": "email", "issue": EMAIL_TAKEN}])

    # Inviting a pending address again replaces the earlier link.
    db.session.execute(sa.delete(Invitation).where(
        Invitation.account_id == actor.account_id, Invitation.accepted_at.is_(None),
        sa.func.lower(Invitation.email) == email.lower()))
    token = new_token()
    invitation = Invitation(account_id=actor.account_id, email=email, role=role, token_hash=hash_token(token),
                            invited_by=actor.id, expires_at=utcnow() + INVITATION_LIFETIME)
    db.session.add(invitation)
    db.session.flush()
    audit.record("team.invited", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"invitation:{invitation.id}"], meta={"email": email, "role": role})
    db.session.commit()
    return invitation, token


def resend_invitation(actor, invitation_id, *, ip=None):
    """A new link for a pending invitation, valid for a full lifetime again; returns (invitation, token).

    Only the token's hash is stored, so resending means a new token: the earlier link stops working."""
    permissions.require(actor, "team:write")
    invitation = _pending_invitation(actor.account_id, invitation_id)
    if invitation.role == "owner" and actor.role != "owner":
        raise Forbidden(OWNER_ONLY)
    token = new_token()
    invitation.token_hash = hash_token(token)
    invitation.expires_at = utcnow() + INVITATION_LIFETIME
    audit.record("team.invitation_resent", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"invitation:{invitation.id}"], meta={"email": invitation.email, "role": invitation.role})
    db.session.commit()
    return invitation, token


def invitation_link(token):
    """The join link an invitation's email and the team page show."""
    return current_app.config["BASE_URL"].rstrip("/") + INVITE_PATH + token


def seal_token(token):
    """The token encrypted for a mail task's arguments (the queue never holds a usable link)."""
    return encrypt(token)


def send_invitation(invitation_id, sealed_token):
    """Mail the invitation (a task runs it); the SendResult, or None when the link no longer works
    (revoked, resent with a newer link, accepted or expired): nothing is sent then."""
    try:
        token = decrypt(sealed_token)
    except ValueError:  # sealed with a key since removed from NUDGE_ENCRYPTION_KEYS
        return None
    invitation = find_invitation(token)
    if invitation is None or str(invitation.id) != str(invitation_id):
        return None
    account = db.session.get(Account, invitation.account_id)
    who = _inviter_label(invitation)
    expires = invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    text = (f"{who or 'A teammate'} invited you to join the {account.name} account on {system_mail.PRODUCT} "
            f"as {_article(invitation.role)} {invitation.role}.\n\n"
            f"Open this link to choose your name and password and join:\n\n{invitation_link(token)}\n\n"
            f"The link works once and expires on {expires}. If it has expired, ask for a new one.\n\n"
            "If you did not expect this invitation, ignore this message: nothing happens unless the link is used.\n")
    subject = (f"{who} invited you to {account.name} on {system_mail.PRODUCT}" if who
               else f"You are invited to {account.name} on {system_mail.PRODUCT}")
    return system_mail.send_system_email(invitation.email, subject, text, account_id=account.id)


def _inviter_label(invitation):
    """'Ann Lee (ann@acme.example)', the email alone, or None when the inviter has left."""
    inviter = db.session.get(User, invitation.invited_by) if invitation.invited_by else None
    if inviter is None:
        return None
    return f"{inviter.name} ({inviter.email})" if inviter.name else inviter.email


def _article(word):
    return "an" if word[:1] in "aeiou" else "a"


def _pending_invitation(account_id, invitation_id):
    invitation = db.session.scalar(sa.select(Invitation).where(
        Invitation.account_id == account_id, Invitation.id == _uuid(invitation_id),
        Invitation.accepted_at.is_(None)))
    if invitation is None:
        raise NotFound("Invitation not found.")
    return invitation


def revoke_invitation(actor, invitation_id, *, ip=None):
    """Withdraw an invitation that has not been accepted; its link stops working."""
    permissions.require(actor, "team:write")
    invitation = _pending_invitation(actor.account_id, invitation_id)
    audit.record("team.invitation_revoked", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"invitation:{invitation.id}"], meta={"email": invitation.email, "role": invitation.role})
    db.session.delete(invitation)
    db.session.commit()
    return invitation


def find_invitation(token):
    """The invitation behind a link if it can still be accepted, else None."""
    if not token or not isinstance(token, str) or len(token) > 200:
        return None
    return db.session.scalar(sa.select(Invitation).where(
        Invitation.token_hash == hash_token(token), Invitation.accepted_at.is_(None),
        Invitation.expires_at > utcnow()))


def invitation_account(invitation):
    return db.session.get(Account, invitation.account_id)


def accept_invitation(token, *, name, password, ip=None):
    """Create the invited member with the invitation's role; returns the new User."""
    invitation = find_invitation(token)
    if invitation is None:
        raise NotFound(INVALID_INVITATION)
    name = validate_fields({"name": lambda: require_text(name, "name", "Your name", 255),
                            "password": lambda: check_password_strength(password)})["name"]
    if email_taken(invitation.email):
        raise Conflict(EMAIL_TAKEN, [{"field": "email", "issue": EMAIL_TAKEN}])

    # Claim the invitation with a guarded UPDATE so two concurrent accepts cannot both succeed.
    claimed = db.session.execute(
        sa.update(Invitation).where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        db.session.rollback()
        raise NotFound(INVALID_INVITATION)
    user = User(account_id=invitation.account_id, email=invitation.email, name=name,
                password_hash=hash_password(password), role=invitation.role)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(EMAIL_TAKEN, [{"field": "email", "issue": EMAIL_TAKEN}])
    audit.record("team.joined", account_id=invitation.account_id, actor=user, ip=ip,
                 resources=[f"user:{user.id}", f"invitation:{invitation.id}"], meta={"role": user.role})
    db.session.commit()
    return user


@dataclass(frozen=True)
class CreatedByMember:
    """What a member created that works without them: active API clients and pending invitations."""
    member: User
    api_clients: list
    invitations: list

    def __bool__(self):
        return bool(self.api_clients or self.invitations)


def created_by_member(actor, member_id):
    """The active API clients and pending invitations a member created: what removing or demoting them
    offers to revoke."""
    permissions.require(actor, "team:write")
    member = get_member(actor.account_id, member_id)
    if member.role == "owner" and actor.role != "owner":
        raise Forbidden(OWNER_ONLY)
    invitations = db.session.scalars(
        sa.select(Invitation).where(Invitation.account_id == actor.account_id, Invitation.invited_by == member.id,
                                    Invitation.accepted_at.is_(None))
        .order_by(Invitation.created_at.desc(), Invitation.id)).all()
    return CreatedByMember(member, api_clients.created_by(actor.account_id, member.id), invitations)


def is_demotion(before, after):
    """Whether going from role `before` to `after` loses rights (ROLES runs from most to least)."""
    return ROLES.index(after) > ROLES.index(before)


def change_role(actor, member_id, role, *, revoke_clients=(), revoke_invitations=(), ip=None):
    """Give a member another role; the account always keeps at least one owner. revoke_clients and
    revoke_invitations (ids among created_by_member's) are revoked with the change."""
    permissions.require(actor, "team:write")
    role = _check_role(role)
    member = get_member(actor.account_id, member_id)
    if actor.role != "owner" and (role == "owner" or member.role == "owner"):
        raise Forbidden(OWNER_ONLY)
    if member.role == role:
        return member
    if member.role == "owner":
        _require_another_owner(actor.account_id, member)
    before = member.role
    why = "demoted" if is_demotion(before, role) else "role changed"
    _revoke_created(actor, member, revoke_clients, revoke_invitations, why, ip)
    member.role = role
    audit.record("team.role_changed", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"user:{member.id}"], meta={"email": member.email, "from": before, "to": role})
    db.session.commit()
    return member


def remove_member(actor, member_id, *, revoke_clients=(), revoke_invitations=(), ip=None):
    """Delete a member's sign-in; the audit log keeps their name as a label. revoke_clients and
    revoke_invitations (ids among created_by_member's) are revoked; their other active clients are handed
    over to actor, narrowed to what they hold now."""
    permissions.require(actor, "team:write")
    member = get_member(actor.account_id, member_id)
    if member.id == actor.id:
        raise Forbidden("You cannot remove yourself. Ask another owner.")
    if member.role == "owner" and actor.role != "owner":
        raise Forbidden(OWNER_ONLY)
    if member.role == "owner":
        _require_another_owner(actor.account_id, member)
    _revoke_created(actor, member, revoke_clients, revoke_invitations, "removed", ip)
    api_clients.hand_over(actor, member, ip=ip)
    audit.record("team.removed", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"user:{member.id}"], meta={"email": member.email, "role": member.role})
    _detach_references(member.id)
    db.session.delete(member)
    db.session.commit()
    return member


def _revoke_created(actor, member, client_ids, invitation_ids, why, ip):
    """Revoke the chosen clients and invitations the member created (ids that are not theirs are ignored)."""
    if client_ids:
        api_clients.revoke_created_by(actor, member, client_ids, why=why, ip=ip)
    wanted = {str(invitation_id) for invitation_id in invitation_ids or ()}
    if not wanted:
        return
    for invitation in created_by_member(actor, member.id).invitations:
        if str(invitation.id) in wanted:
            audit.record("team.invitation_revoked", account_id=actor.account_id, actor=actor, ip=ip,
                         resources=[f"invitation:{invitation.id}"],
                         meta={"email": invitation.email, "role": invitation.role, "because": f"inviter {why}",
                               "inviter": member.email})
            db.session.delete(invitation)


def _check_role(role):
    if role not in ROLES:
        raise field_error("role", "Choose one of: " + ", ".join(ROLES) + ".")
    return role


def email_taken(email):
    """Whether anyone already signs in with this address (in any account)."""
    email = email.lower()
    return db.session.scalar(sa.select(sa.func.count()).select_from(User)
                             .where(sa.func.lower(User.email) == email)) > 0 or \
        db.session.scalar(sa.select(sa.func.count()).select_from(Account)
                          .where(sa.func.lower(Account.email) == email)) > 0


def _require_another_owner(account_id, member):
    # Lock the owners' rows (PostgreSQL) so two owners cannot demote each other at once.
    owners = db.session.scalars(sa.select(User.id).where(User.account_id == account_id, User.role == "owner")
                                .with_for_update()).all()
    if not any(owner_id != member.id for owner_id in owners):
        raise Conflict(LAST_OWNER)


def _detach_references(user_id):
    """Null every column that points at this user (what ON DELETE SET NULL does on PostgreSQL;
    SQLite does not enforce foreign keys unless asked)."""
    users = User.__table__
    for table in db.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table is users and table is not users:
                db.session.execute(sa.update(table).where(fk.parent == user_id).values({fk.parent: None}))


def _uuid(value):
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        raise NotFound("Not found.")
