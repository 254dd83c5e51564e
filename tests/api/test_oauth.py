"""POST /api/v1/oauth/token: the client-credentials grant."""
import base64

import jwt as pyjwt

from nudge.extensions import db
from nudge.models import ApiClient
from tests.api.conftest import new_client


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_token_with_form_body(client, make_account, make_api_client, app):
    account, _ = make_account()
    api_client, secret = make_api_client(account, "contacts:read contacts:write")
    response = client.post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret})
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "contacts:read contacts:write"
    assert response.headers["Cache-Control"] == "no-store"
    claims = pyjwt.decode(body["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])
    assert claims["sub"] == api_client.client_id
    assert claims["account_id"] == str(account.id)
    assert claims["scopes"] == ["contacts:read", "contacts:write"]
    assert db.session.get(ApiClient, api_client.id).last_used_at is not None


def test_token_with_json_body(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account, "analytics:read")
    response = client.post("/api/v1/oauth/token", json={
        "grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret})
    assert response.status_code == 200
    assert response.get_json()["scope"] == "analytics:read"


def test_token_with_http_basic(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account, "campaigns:read")
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 200
    assert response.get_json()["scope"] == "campaigns:read"


def test_wrong_secret_is_invalid_client(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, _secret = make_api_client(account)
    response = client.post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": "ncs_wrong"})
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "invalid_client"
    assert body["error_description"]
    assert "ncs_wrong" not in response.get_data(as_text=True)


def test_wrong_secret_over_basic_asks_for_basic(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, _secret = make_api_client(account)
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(api_client.client_id, "nope"))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_unknown_client_and_missing_credentials(client):
    response = client.post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "nc_nobody", "client_secret": "x"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_revoked_client_gets_no_token(client, make_account, make_api_client):
    account, owner = make_account()
    api_client, secret = make_api_client(account)
    from nudge.services import api_clients
    api_clients.revoke_api_client(owner, api_client.id)
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_grant_type_is_checked(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account)
    response = client.post("/api/v1/oauth/token", data={"grant_type": "password"},
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "unsupported_grant_type"
    response = client.post("/api/v1/oauth/token", data={}, headers=basic(api_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "grant_type" in response.get_json()["error_description"]


def test_malformed_requests_are_invalid_request(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account)
    response = client.post("/api/v1/oauth/token", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    response = client.post("/api/v1/oauth/token", data="grant_type=client_credentials&grant_type=client_credentials",
                           content_type="application/x-www-form-urlencoded",
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    # Credentials both in the header and in the body: one method only (RFC 6749 section 2.3).
    response = client.post("/api/v1/oauth/token", headers=basic(api_client.client_id, secret), data={
        "grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_scope_narrows_the_token(client, make_account, make_api_client, app):
    account, _ = make_account()
    api_client, secret = make_api_client(account, "contacts:read contacts:write analytics:read")
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials", "scope": "contacts:read"},
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 200
    body = response.get_json()
    assert body["scope"] == "contacts:read"
    claims = pyjwt.decode(body["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])
    assert claims["scopes"] == ["contacts:read"]


def test_scope_the_client_lacks_is_invalid_scope(client, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account, "contacts:read")
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials",
                                                        "scope": "contacts:read account:admin"},
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_scope"
    assert "account:admin" in body["error_description"]
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials", "scope": "everything"},
                           headers=basic(api_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


def test_token_endpoint_limits_guessing_per_address(make_app, make_account, make_api_client):
    app = make_app(API_TOKEN_RATE_LIMIT="3 per minute")
    guesser, other = new_client(app), new_client(app)
    data = {"grant_type": "client_credentials", "client_id": "nc_guess", "client_secret": "guess"}
    statuses = [guesser.post("/api/v1/oauth/token", data=data).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    blocked = guesser.post("/api/v1/oauth/token", data=data)
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert blocked.get_json()["error"]["code"] == "RATE_LIMITED"
    # Another address is not affected.
    account, _ = make_account()
    api_client, secret = make_api_client(account)
    response = other.post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret})
    assert response.status_code == 200


def test_a_demoted_creator_narrows_the_clients_tokens_at_once(client, make_account, make_user, app):
    from nudge.services import api_clients, team
    from tests.api.conftest import bearer, owner_of, request_token
    account, _ = make_account()
    creator = make_user(account, role="owner")
    full, secret = api_clients.create_api_client(creator, name="Full", scopes=["account:admin", "contacts:read"])
    only_admin, only_admin_secret = api_clients.create_api_client(creator, name="Admin", scopes=["account:admin"])
    issued_before = request_token(client, full.client_id, secret)
    assert client.put("/api/v1/account", json={"name": "Renamed"},
                        headers=bearer(issued_before)).status_code == 200

    team.change_role(owner_of(account), creator.id, "admin")

    # A token issued before the demotion loses account:admin on its next request...
    refused = client.put("/api/v1/account", json={"name": "Again"}, headers=bearer(issued_before))
    assert refused.status_code == 403 and "account:admin" in refused.get_json()["error"]["message"]
    assert client.get("/api/v1/contacts", headers=bearer(issued_before)).status_code == 200
    # ...and new tokens no longer carry it.
    response = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials",
                                                         "client_id": full.client_id, "client_secret": secret})
    assert response.status_code == 200 and response.get_json()["scope"] == "contacts:read"
    asked = client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials", "scope": "account:admin",
                                                      "client_id": full.client_id, "client_secret": secret})
    assert asked.status_code == 400 and asked.get_json()["error"] == "invalid_scope"
    nothing_left = client.post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": only_admin.client_id, "client_secret": only_admin_secret})
    assert nothing_left.status_code == 400 and nothing_left.get_json()["error"] == "invalid_scope"
