"""POST /api/v1/oauth/token: the OAuth 2.0 client-credentials grant (RFC 6749 section 4.4).

Answers in OAuth's own JSON (RFC 6749 section 5), not the envelope: a token response or
{"error", "error_description"}."""
from urllib.parse import unquote_plus

from flask import jsonify, request
from flask_jwt_extended import create_access_token
from flask_jwt_extended.config import config as jwt_config

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import ip_key, token_rate_limit
from nudge.blueprints.api.openapi import SCOPE_DESCRIPTIONS, document, schema
from nudge.blueprints.api.responses import NUL_MESSAGE, form_field_with_nul, is_json_mimetype, parse_json
from nudge.errors import AuthenticationFailed, ValidationError
from nudge.extensions import limiter
from nudge.services import api_clients

PARAMETERS = ("grant_type", "scope", "client_id", "client_secret")

TOKEN = schema("AccessToken", {
    "type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
    "properties": {
        "access_token": {"type": "string", "description": "A JWT; send it as `Authorization: Bearer <token>`."},
        "token_type": {"type": "string", "const": "Bearer"},
        "expires_in": {"type": "integer", "description": "Lifetime in seconds."},
        "scope": {"type": "string", "description": "The granted scopes, space-separated."}},
    "example": {"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...", "token_type": "Bearer",
                "expires_in": 3600, "scope": "contacts:read contacts:write"}})

OAUTH_ERROR = schema("OAuthError", {
    "type": "object", "required": ["error"],
    "properties": {
        "error": {"type": "string", "enum": ["invalid_request", "invalid_client", "invalid_grant",
                                             "unauthorized_client", "unsupported_grant_type", "invalid_scope"]},
        "error_description": {"type": "string"}},
    "example": {"error": "invalid_client", "error_description": "Client authentication failed."}})

TOKEN_REQUEST = {
    "type": "object", "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "const": "client_credentials"},
        "scope": {"type": "string", "description": "Space-separated subset of the client's scopes; "
                  "omit it for all of them. One of: " + ", ".join(SCOPE_DESCRIPTIONS) + "."},
        "client_id": {"type": "string", "description": "When not sent with HTTP Basic."},
        "client_secret": {"type": "string", "description": "When not sent with HTTP Basic."}}}


def _oauth_error_response(description):
    return {"description": description, "content": {"application/json": {"schema": OAUTH_ERROR}}}


class OAuthError(Exception):
    def __init__(self, error, description, status=400, headers=None):
        super().__init__(description)
        self.error, self.description, self.status, self.headers = error, description, status, headers or {}


def oauth_error(exc):
    response = jsonify({"error": exc.error, "error_description": exc.description})
    response.status_code = exc.status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def _parameters():
    """The request parameters from a form-encoded or JSON body (RFC 6749 uses form encoding)."""
    mimetype = request.mimetype or ""
    if mimetype == "application/x-www-form-urlencoded":
        form = request.form
        repeated = [name for name in PARAMETERS if len(form.getlist(name)) > 1]
        if repeated:
            raise OAuthError("invalid_request", f"Parameter sent more than once: {', '.join(repeated)}.")
        if form_field_with_nul(form.items(multi=True)) is not None:
            raise OAuthError("invalid_request", NUL_MESSAGE)
        return {name: form.get(name) for name in PARAMETERS if form.get(name) not in (None, "")}
    if is_json_mimetype(mimetype):
        try:
            data = parse_json(request.get_data(cache=True))
        except ValidationError as exc:
            raise OAuthError("invalid_request", exc.details[0]["issue"] if exc.details else exc.message)
        if not isinstance(data, dict):
            raise OAuthError("invalid_request", "The JSON body must be an object.")
        params = {}
        for name in PARAMETERS:
            value = data.get(name)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise OAuthError("invalid_request", f"{name} must be a string.")
            params[name] = value
        return params
    if not request.get_data(cache=True):
        return {}
    raise OAuthError("invalid_request",
                     "Send the parameters as application/x-www-form-urlencoded (or application/json).")


def _client_credentials(params):
    """(client_id, secret, used_basic) from HTTP Basic (client_secret_basic) or the body (client_secret_post)."""
    auth = request.authorization
    body_credentials = "client_id" in params or "client_secret" in params
    if auth is not None and auth.type == "basic":
        if body_credentials:
            raise OAuthError("invalid_request", "Send the client credentials either with HTTP Basic or in the body, "
                             "not both.")
        # RFC 6749 section 2.3.1: both parts are form-encoded before Basic encoding.
        return unquote_plus(auth.username or ""), unquote_plus(auth.password or ""), True
    if auth is not None or (request.headers.get("Authorization") and not body_credentials):
        raise OAuthError("invalid_client", "Unsupported Authorization scheme: use HTTP Basic with the client_id "
                         "and client_secret.", 401, {"WWW-Authenticate": 'Basic realm="NudgeCampaign API"'})
    return params.get("client_id"), params.get("client_secret"), False


def _granted_scopes(client, requested):
    # What the client holds that its creator's role still allows (a demoted creator narrows it).
    held = api_clients.effective_scopes(client)
    if not held:
        raise OAuthError("invalid_scope", "None of this client's scopes is allowed by its creator's role any more; "
                         "ask an owner or admin for a new client.")
    if requested is None:
        return held
    wanted = requested.split()
    if not wanted:
        return held
    unknown = [s for s in wanted if s not in SCOPE_DESCRIPTIONS]
    if unknown:
        raise OAuthError("invalid_scope", "Unknown scope: " + ", ".join(unknown) + ".")
    missing = sorted(set(wanted) - set(held))
    if missing:
        raise OAuthError("invalid_scope", "This client does not hold the scope(s): " + ", ".join(missing) + ".")
    return sorted(set(wanted))


def expires_in():
    delta = jwt_config.access_expires
    return None if delta is False else int(delta.total_seconds())


@bp.post("/oauth/token")
@document(
    summary="Get an access token (client credentials)",
    tags=["Authentication"], auth=False,
    description=(
        "OAuth 2.0 client-credentials grant (RFC 6749 §4.4). Authenticate the client with HTTP Basic "
        "(`client_id:client_secret`) or with `client_id` and `client_secret` in the body. The body is "
        "form-encoded (as in the RFC) or JSON. `scope` narrows the token to some of the client's scopes. "
        "Limited to 30 requests per minute per IP address.\n\n"
        "```\ncurl -u \"$CLIENT_ID:$CLIENT_SECRET\" -d grant_type=client_credentials \\\n"
        "     https://nudge.example.com/api/v1/oauth/token\n```"),
    request_content={"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": TOKEN_REQUEST},
        "application/json": {"schema": TOKEN_REQUEST}}},
    responses={
        "200": {"description": "The access token.",
                "headers": {"Cache-Control": {"description": "`no-store`", "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": TOKEN}}},
        "400": _oauth_error_response("`invalid_request`, `unsupported_grant_type` or `invalid_scope`."),
        "401": _oauth_error_response("`invalid_client`: unknown client, wrong secret or revoked client."),
        "429": {"$ref": "#/components/responses/RateLimited"}},
    security=[{"clientBasic": []}, {}])
@limiter.limit(token_rate_limit, key_func=ip_key,
               error_message="Too many token requests from this address; retry after the Retry-After header's seconds.")
def issue_token():
    try:
        params = _parameters()
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required (client_credentials).")
        if grant_type != "client_credentials":
            raise OAuthError("unsupported_grant_type", "Only grant_type=client_credentials is supported.")
        client_id, secret, used_basic = _client_credentials(params)
        if not client_id or not secret:
            raise OAuthError("invalid_client", "Client authentication failed: send the client_id and client_secret.",
                             401, {"WWW-Authenticate": 'Basic realm="NudgeCampaign API"'})
        try:
            client = api_clients.authenticate_client(client_id, secret)
        except AuthenticationFailed:
            raise OAuthError("invalid_client", "Client authentication failed: unknown client, wrong secret or "
                             "revoked client.", 401,
                             {"WWW-Authenticate": 'Basic realm="NudgeCampaign API"'} if used_basic else None)
        scopes = _granted_scopes(client, params.get("scope"))
    except OAuthError as exc:
        return oauth_error(exc)

    access_token = create_access_token(identity=client.client_id,
                                       additional_claims={"account_id": str(client.account_id), "scopes": scopes})
    body = {"access_token": access_token, "token_type": "Bearer", "scope": " ".join(scopes)}
    lifetime = expires_in()
    if lifetime is not None:
        body["expires_in"] = lifetime
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
