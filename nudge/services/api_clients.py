"""OAuth 2.0 client-credentials clients: create (secret shown once), list, revoke, authenticate.

A client holds only scopes its creator's role has (permissions.role_scopes; account:admin is owner-only),
and its tokens carry the client's scopes intersected with what its creator's role allows *now*
(effective_scopes): demoting a member narrows the clients they made at their next token or request. A
client whose creator has left keeps at most what an admin may hold (see effective_scopes).
"""
import secrets

import sqlalchemy as sa

from nudge.errors import AuthenticationFailed, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import ApiClient, User
from nudge.models.types import utcnow
from nudge.services import audit, permissions
from nudge.services.security import hash_token, tokens_equal
from nudge.services.validation import require_text


def parse_scopes(scopes):
    """A list or space-separated string of scopes, checked against the spec's scope list."""
    if isinstance(scopes, str):
        scopes = scopes.split()
    scopes = sorted(set(scopes or []))
    unknown = [s for s in scopes if s not in permissions.SCOPES]
    if unknown:
        raise ValidationError("Unknown scope: " + ", ".join(unknown) + ".",
                              [{"field": "scopes", "issue": "Unknown scope " + s} for s in unknown])
    if not scopes:
        raise ValidationError("Choose at least one scope.", [{"field": "scopes", "issue": "Choose at least one scope."}])
    return scopes


def grantable_scopes(actor):
    """The scopes this actor may put on a new client: its role's (a member), or its own (an API caller)."""
    if isinstance(actor, permissions.ApiActor):
        return tuple(s for s in permissions.SCOPES if "account:admin" in actor.scopes or s in actor.scopes)
    return permissions.role_scopes(actor.role)


def _check_grantable(actor, scopes):
    beyond = [scope for scope in scopes if scope not in grantable_scopes(actor)]
    if beyond:
        who = "an owner" if set(beyond) <= set(permissions.OWNER_ONLY_SCOPES) else "a member whose role has it"
        message = (f"Your role ({getattr(actor, 'role', 'API client')}) cannot give "
                   f"{', '.join(beyond)}: only {who} can.")
        raise ValidationError(message, [{"field": "scopes", "issue": message}])
    return scopes


def create_api_client(actor, *, name, scopes, ip=None):
    """Returns (client, secret); the secret exists only in this return value. The scopes must be ones the
    actor's role has (ValidationError on field scopes otherwise)."""
    permissions.require(actor, "api_clients:write")
    name = require_text(name, "name", "Name", 255)
    scopes = _check_grantable(actor, parse_scopes(scopes))
    secret = "ncs_" + secrets.token_urlsafe(32)
    client = ApiClient(account_id=actor.account_id, name=name, client_id="nc_" + secrets.token_hex(12),
                       secret_hash=hash_token(secret), scopes=scopes, created_by=actor.id)
    db.session.add(client)
    db.session.flush()
    audit.record("api_client.created", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"api_client:{client.client_id}"], meta={"name": name, "scopes": scopes})
    db.session.commit()
    return client, secret


def list_api_clients(account_id):
    return db.session.scalars(
        sa.select(ApiClient).where(ApiClient.account_id == account_id)
        .order_by(ApiClient.revoked_at.is_not(None), ApiClient.created_at.desc())).all()


def get_api_client(account_id, client_pk):
    client = db.session.scalar(sa.select(ApiClient).where(ApiClient.account_id == account_id,
                                                          ApiClient.id == client_pk))
    if client is None:
        raise NotFound("API client not found.")
    return client


def revoke_api_client(actor, client_pk, *, ip=None):
    """Revoke a client; its tokens stop working at once."""
    permissions.require(actor, "api_clients:write")
    client = get_api_client(actor.account_id, client_pk)
    if client.revoked_at is None:
        _revoke(actor, client, ip, {"name": client.name})
        db.session.commit()
    return client


def _revoke(actor, client, ip, meta):
    client.revoked_at = utcnow()
    audit.record("api_client.revoked", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"api_client:{client.client_id}"], meta=meta)


def created_by(account_id, user_id):
    """The account's active clients a member created, newest first."""
    return db.session.scalars(
        sa.select(ApiClient).where(ApiClient.account_id == account_id, ApiClient.created_by == user_id,
                                   ApiClient.revoked_at.is_(None))
        .order_by(ApiClient.created_at.desc(), ApiClient.id)).all()


def revoke_created_by(actor, member, client_ids, *, why, ip=None):
    """Revoke those of client_ids that are `member`'s active clients (others are ignored), audited with why
    ("removed" or "demoted"); the caller commits with its own change. Returns the revoked clients."""
    permissions.require(actor, "api_clients:write")
    wanted = {str(client_id) for client_id in client_ids}
    revoked = [client for client in created_by(actor.account_id, member.id) if str(client.id) in wanted]
    for client in revoked:
        _revoke(actor, client, ip, {"name": client.name, "because": f"creator {why}", "creator": member.email})
    return revoked


def hand_over(actor, member, *, ip=None):
    """Give `member`'s remaining active clients to actor (the member is leaving), each narrowed to the scopes
    it has now: from then on actor's role bounds them. Audited; the caller commits."""
    permissions.require(actor, "api_clients:write")
    clients = created_by(actor.account_id, member.id)
    for client in clients:
        client.scopes = effective_scopes(client)
        client.created_by = actor.id
        audit.record("api_client.handed_over", account_id=actor.account_id, actor=actor, ip=ip,
                     resources=[f"api_client:{client.client_id}"],
                     meta={"name": client.name, "from": member.email, "scopes": client.scopes})
    return clients


def authenticate_client(client_id, secret):
    """The active client with these credentials, or AuthenticationFailed."""
    client = db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == (client_id or "")))
    supplied = hash_token(secret or "")
    if client is None or client.revoked_at is not None or not tokens_equal(client.secret_hash, supplied):
        raise AuthenticationFailed("Client authentication failed.")
    client.last_used_at = utcnow()
    db.session.commit()
    return client


def effective_scopes(client):
    """What a token of this client may carry now: its scopes that its creator's current role has.

    A client whose creator is no longer a member (created_by cleared) keeps its scopes up to an admin's
    (account:admin needs an owner behind it): a removal that kept the client (team.remove_member) hands it
    to whoever removed the member instead, so this covers clients orphaned before that rule."""
    creator = db.session.get(User, client.created_by) if client.created_by else None
    if creator is None or creator.account_id != client.account_id:
        allowed = permissions.role_scopes("admin")
    else:
        allowed = permissions.role_scopes(creator.role)
    return sorted(set(client.scopes or []) & set(allowed))


def active_client(client_id):
    """The client behind a token, or None once it is revoked or gone."""
    return db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id,
                                                        ApiClient.revoked_at.is_(None)))
