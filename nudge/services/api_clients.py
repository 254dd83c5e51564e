"""OAuth 2.0 client-credentials clients: create (secret shown once), list, revoke, authenticate."""
import secrets

import sqlalchemy as sa

from nudge.errors import AuthenticationFailed, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import ApiClient
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


def create_api_client(actor, *, name, scopes, ip=None):
    """Returns (client, secret); the secret exists only in this return value."""
    permissions.require(actor, "api_clients:write")
    name = require_text(name, "name", "Name", 255)
    scopes = parse_scopes(scopes)
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
        client.revoked_at = utcnow()
        audit.record("api_client.revoked", account_id=actor.account_id, actor=actor, ip=ip,
                     resources=[f"api_client:{client.client_id}"], meta={"name": client.name})
        db.session.commit()
    return client


def authenticate_client(client_id, secret):
    """The active client with these credentials, or AuthenticationFailed."""
    client = db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == (client_id or "")))
    supplied = hash_token(secret or "")
    if client is None or client.revoked_at is not None or not tokens_equal(client.secret_hash, supplied):
        raise AuthenticationFailed("Client authentication failed.")
    client.last_used_at = utcnow()
    db.session.commit()
    return client


def active_client(client_id):
    """The client behind a token, or None once it is revoked or gone."""
    return db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id,
                                                        ApiClient.revoked_at.is_(None)))
