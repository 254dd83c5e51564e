"""Bearer tokens on every API endpoint: missing, invalid, expired, revoked; scopes; roles."""
import datetime as dt

import pytest
from flask_jwt_extended import create_access_token

from nudge.errors import Forbidden
from nudge.services import api_clients
from tests.api.conftest import bearer, new_client, request_token


def assert_unauthorized(response, words):
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "UNAUTHORIZED"
    assert words in error["message"].lower()
    assert error["details"] == []
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_account_with_a_token(client, make_account, api_token):
    account, _ = make_account(name="Acme Shop")
    response = client.get("/api/v1/account", headers=bearer(api_token(account, "contacts:read")))
    assert response.status_code == 200
    assert response.get_json()["data"]["name"] == "Acme Shop"


def test_missing_token(client):
    response = client.get("/api/v1/account")
    assert_unauthorized(response, "missing access token")
    assert "error=" not in response.headers["WWW-Authenticate"]


def test_wrong_authorization_scheme(client):
    assert_unauthorized(client.get("/api/v1/account", headers={"Authorization": "Token abc"}),
                        "invalid authorization header")


def test_invalid_token(client):
    response = client.get("/api/v1/account", headers=bearer("not.a.jwt"))
    assert_unauthorized(response, "invalid access token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_token_signed_with_another_key(client, make_account, make_api_client, app):
    import jwt as pyjwt
    account, _ = make_account()
    api_client, _ = make_api_client(account)
    forged = pyjwt.encode({"sub": api_client.client_id, "account_id": str(account.id), "scopes": ["account:admin"],
                           "type": "access", "exp": dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)},
                          "not-the-secret-key-of-this-server-000000", algorithm="HS256")
    assert_unauthorized(client.get("/api/v1/account", headers=bearer(forged)), "invalid access token")


def test_expired_token(make_app, make_account, make_api_client):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=dt.timedelta(seconds=-5))
    account, _ = make_account()
    api_client, secret = make_api_client(account)
    test_client = new_client(app)
    token = request_token(test_client, api_client.client_id, secret)
    response = test_client.get("/api/v1/account", headers=bearer(token))
    assert_unauthorized(response, "expired")


def test_crafted_expired_token(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, _ = make_api_client(account)
    token = create_access_token(identity=api_client.client_id, expires_delta=dt.timedelta(seconds=-1),
                                additional_claims={"account_id": str(account.id), "scopes": ["account:admin"]})
    assert_unauthorized(client.get("/api/v1/account", headers=bearer(token)), "expired")


def test_revoked_clients_tokens_stop_working(client, make_account, make_api_client):
    account, owner = make_account()
    api_client, secret = make_api_client(account)
    token = request_token(client, api_client.client_id, secret)
    assert client.get("/api/v1/account", headers=bearer(token)).status_code == 200
    api_clients.revoke_api_client(owner, api_client.id)
    assert_unauthorized(client.get("/api/v1/account", headers=bearer(token)), "revoked")


def test_token_claiming_another_account_is_rejected(client, make_account, make_api_client):
    account_a, _ = make_account()
    account_b, _ = make_account()
    client_b, _ = make_api_client(account_b)
    token = create_access_token(identity=client_b.client_id,
                                additional_claims={"account_id": str(account_a.id), "scopes": ["account:admin"]})
    assert client.get("/api/v1/account", headers=bearer(token)).status_code == 401


def test_missing_scope_is_forbidden_and_named(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "contacts:read")
    response = client.put("/api/v1/account", json={"name": "New name"}, headers=bearer(token))
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "FORBIDDEN"
    assert "account:admin" in error["message"]
    assert error["details"] == [{"field": "scope", "issue": "Requires account:admin."}]
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_narrowed_token_loses_the_other_scopes(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account, "account:admin contacts:read")
    token = request_token(client, api_client.client_id, secret, scope="contacts:read")
    response = client.put("/api/v1/account", json={"name": "Renamed"}, headers=bearer(token))
    assert response.status_code == 403
    assert client.get("/api/v1/account", headers=bearer(token)).status_code == 200


def test_account_admin_scope_may_change_settings(client, make_account, api_token):
    account, _ = make_account()
    response = client.put("/api/v1/account", json={"name": "Renamed"}, headers=bearer(api_token(account)))
    assert response.status_code == 200
    assert response.get_json()["data"]["name"] == "Renamed"


def test_viewer_cannot_create_api_clients(make_account, make_user):
    account, _ = make_account()
    viewer = make_user(account, role="viewer")
    with pytest.raises(Forbidden):
        api_clients.create_api_client(viewer, name="Sneaky", scopes="account:admin")
    marketer = make_user(account, role="marketer")
    with pytest.raises(Forbidden):
        api_clients.create_api_client(marketer, name="Sneaky", scopes="contacts:read")
    assert api_clients.list_api_clients(account.id) == []
