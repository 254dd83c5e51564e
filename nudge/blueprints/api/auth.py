"""Bearer-token authentication, scopes and per-account rate limits for every /api/v1 endpoint.

    @bp.get("/contacts")
    @api_route("contacts:read", summary="List contacts", response=CONTACT, paginated=True)
    def list_contacts():
        actor = g.api_actor            # permissions.ApiActor(account_id, client_id, scopes)
        ...

api_route verifies the JWT (401 UNAUTHORIZED saying missing / invalid / expired / revoked), checks
the API client is still active, builds g.api_actor and checks the scope (403 FORBIDDEN naming it;
account:admin grants every scope), then refuses a query string or form holding a NUL character (400;
404 in the path). Services re-check with permissions.require(actor, ...).
"""
import functools
import uuid

from flask import current_app, g, request
from flask_jwt_extended import decode_token, get_jwt, verify_jwt_in_request

from nudge.blueprints.api.errors import error_response
from nudge.blueprints.api.openapi import IMPLIED_SCOPES, document
from nudge.blueprints.api.responses import refuse_nul_characters
from nudge.blueprints.common import client_ip
from nudge.extensions import db, jwt
from nudge.models import Account
from nudge.services import api_clients
from nudge.services.permissions import ApiActor, scope_for

REALM = "NudgeCampaign API"
TOKEN_HINT = "Get one from POST /api/v1/oauth/token."


def www_authenticate(error=None, description=None, scope=None):
    """The RFC 6750 challenge; no error code when the request carried no token at all."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="' + description.replace('"', "'").replace("\\", "") + '"')
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def unauthorized(message, error="invalid_token"):
    return error_response(401, message, code="UNAUTHORIZED",
                          headers={"WWW-Authenticate": www_authenticate(error, message if error else None)})


# flask-jwt-extended raises its own errors from verify_jwt_in_request(); answer them in the envelope.

@jwt.unauthorized_loader
def _missing_token(reason):
    if request.headers.get("Authorization"):
        return unauthorized(f"Invalid Authorization header: send 'Authorization: Bearer <token>'. {TOKEN_HINT}",
                            error="invalid_request")
    return unauthorized(f"Missing access token: send 'Authorization: Bearer <token>'. {TOKEN_HINT}", error=None)


@jwt.invalid_token_loader
def _invalid_token(reason):
    return unauthorized(f"Invalid access token ({reason.rstrip('.')}). {TOKEN_HINT}")


@jwt.expired_token_loader
def _expired_token(jwt_header, jwt_payload):
    return unauthorized(f"Access token expired. {TOKEN_HINT}")


@jwt.revoked_token_loader
def _revoked_token(jwt_header, jwt_payload):
    return unauthorized("Access token revoked: its API client was revoked or deleted.")


@jwt.token_verification_failed_loader
def _failed_verification(jwt_header, jwt_payload):
    return unauthorized(f"Invalid access token. {TOKEN_HINT}")


@jwt.user_lookup_error_loader
def _user_lookup_error(jwt_header, jwt_payload):
    return unauthorized(f"Invalid access token. {TOKEN_HINT}")


@jwt.needs_fresh_token_loader
def _needs_fresh(jwt_header, jwt_payload):
    return unauthorized(f"A fresh access token is required. {TOKEN_HINT}")


@jwt.token_in_blocklist_loader
def _client_gone(jwt_header, jwt_payload):
    """A token dies with its client: revoked (or deleted) clients' tokens answer 401 at once."""
    client = api_clients.active_client(jwt_payload.get("sub"))
    _request_cache()["client"] = client
    return client is None or str(client.account_id) != str(jwt_payload.get("account_id"))


def bearer_token():
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _request_cache():
    """Per-request memo. Not g: a test (or a CLI) that keeps an app context open shares g between requests."""
    return request.environ.setdefault("nudge.api", {})


def verified_claims():
    """The claims of this request's bearer token if its signature and expiry are good, else None.

    Used before the view runs (rate-limit key and plan); the view's api_route does the full check."""
    cache = _request_cache()
    if "claims" not in cache:
        claims = None
        token = bearer_token()
        if token:
            try:
                claims = decode_token(token)
            except Exception:  # noqa: BLE001 - any bad token just means "not identified"
                claims = None
        cache["claims"] = claims
    return cache["claims"]


def _claims_account():
    """The account named by a verified token (loaded once per request), or None."""
    cache = _request_cache()
    if "account" not in cache:
        claims = verified_claims()
        account = None
        if claims and claims.get("account_id"):
            try:
                account = db.session.get(Account, uuid.UUID(str(claims["account_id"])))
            except ValueError:
                account = None
        cache["account"] = account
    return cache["account"]


def rate_limit_key():
    """Flask-Limiter's key: the account behind a verified token (all its clients share it), else the IP."""
    account = _claims_account() if request.blueprint == "api" or (request.blueprint or "").startswith("api.") else None
    if account is not None:
        return f"account:{account.id}"
    return f"ip:{client_ip()}"


def per_minute_limit():
    """Requests per minute for this request's account plan; unidentified callers get the smallest plan's."""
    limits = current_app.config["PLAN_RATE_LIMITS"]
    account = _claims_account()
    if account is not None and account.plan_type in limits:
        return int(limits[account.plan_type])
    return int(min(limits.values()))


def plan_rate_limit():
    """The per-account limit (docs/api.md, Rate limits): the plan's n/minute with a burst of 2n.

    Expressed as one moving window of 2n requests per 2 minutes: averaged over any two minutes an
    account gets n per minute, and it may spend up to 2n (the spec's burst capacity) at once."""
    n = per_minute_limit()
    return f"{2 * n} per 2 minutes"


def rate_limit_message():
    n = per_minute_limit()
    who = "this account" if _claims_account() is not None else "requests without a valid token from this address"
    return (f"Rate limit exceeded: {n} requests per minute with bursts up to {2 * n} "
            f"(a moving window of two minutes) for {who}. Retry after the Retry-After header's seconds.")


def token_rate_limit():
    """Per-IP limit of the token endpoint, to slow down secret guessing."""
    return current_app.config.get("API_TOKEN_RATE_LIMIT") or "30 per minute"


def ip_key():
    return f"ip:{client_ip()}"


def scope_granted(actor, scope):
    return scope is None or scope in IMPLIED_SCOPES or actor.can(scope)


def authenticate(scope=None):
    """Verify the bearer token and scope for this request; sets and returns g.api_actor.

    Raises flask-jwt-extended's errors (answered as 401 by the loaders above); returns a 401/403
    response instead of an actor when the token is fine but cannot be used."""
    verify_jwt_in_request()
    claims = get_jwt()
    client = _request_cache().get("client")
    account = _claims_account() if client is not None else None
    if client is None or account is None or not isinstance(claims.get("scopes"), list):
        return unauthorized(f"Invalid access token. {TOKEN_HINT}")
    # A token never carries more than its client holds now, nor more than its creator's role allows now.
    scopes = frozenset(claims["scopes"]) & frozenset(api_clients.effective_scopes(client))
    g.api_actor = ApiActor(account.id, client.client_id, scopes)
    if not scope_granted(g.api_actor, scope):
        needed = scope_for(scope)
        message = f"This token lacks the {needed} scope."
        return error_response(403, message, [{"field": "scope", "issue": f"Requires {needed}."}], code="FORBIDDEN",
                              headers={"WWW-Authenticate": www_authenticate("insufficient_scope", message, needed)})
    return g.api_actor


def api_route(scope=None, **doc):
    """View decorator for every authenticated API endpoint: token + scope check, plus OpenAPI metadata.

    scope: the OAuth scope the operation needs (None or "account:read": any valid token).
    doc: document()'s keywords (summary=, response=, request=, paginated=, ...)."""
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            result = authenticate(scope)
            if not isinstance(result, ApiActor):
                return result
            refuse_nul_characters()
            return view(*args, **kwargs)
        return document(scope=scope, **doc)(wrapped)
    return decorator


def current_actor():
    return g.api_actor


def current_account():
    """The Account of this request's token (loaded once per request)."""
    return _claims_account()
