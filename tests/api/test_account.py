"""GET/PUT /api/v1/account: the first resource, and tenant isolation."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Account, AuditLog
from tests.api.conftest import bearer


def test_account_fields(client, make_account, api_token):
    account, _ = make_account(name="Acme Shop", email="owner@acme.example", plan="professional")
    response = client.get("/api/v1/account", headers=bearer(api_token(account, "analytics:read")))
    assert response.status_code == 200
    body = response.get_json()
    data = body["data"]
    assert data["id"] == str(account.id)
    assert data["name"] == "Acme Shop"
    assert data["email"] == "owner@acme.example"
    assert data["plan_type"] == "professional"
    assert data["monthly_email_limit"] == 100_000
    assert data["usage"] == {"emails_sent_this_month": 0}
    assert data["timezone"] == "UTC"
    assert data["default_from_email"] == "owner@acme.example"
    assert data["postal_address"] is None
    assert data["created_at"].endswith("Z")
    assert body["meta"] == {}
    assert body["links"] == {"self": "/api/v1/account"}


def test_update_settings(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account)
    changes = {"name": "Acme Ltd", "postal_address": "1 Main St, Springfield", "default_from_name": "Acme",
               "default_from_email": "News@Acme.example", "timezone": "Europe/Berlin"}
    response = client.put("/api/v1/account", json=changes, headers=bearer(token))
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["name"] == "Acme Ltd"
    assert data["postal_address"] == "1 Main St, Springfield"
    assert data["default_from_email"].lower() == "news@acme.example"
    assert data["timezone"] == "Europe/Berlin"
    stored = db.session.get(Account, account.id)
    db.session.refresh(stored)
    assert stored.timezone == "Europe/Berlin"
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.account_id == account.id,
                                                        AuditLog.action == "account.updated"))
    assert entry.actor.startswith("api:nc_")
    # Fields left out keep their value.
    response = client.put("/api/v1/account", json={"timezone": "UTC"}, headers=bearer(token))
    assert response.get_json()["data"]["name"] == "Acme Ltd"


def test_invalid_values_name_the_fields(client, make_account, api_token):
    account, _ = make_account()
    response = client.put("/api/v1/account", json={"timezone": "Mars/Olympus", "default_from_email": "nope"},
                          headers=bearer(api_token(account)))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert {d["field"] for d in error["details"]} == {"timezone", "default_from_email"}


def test_read_only_and_unknown_fields_are_refused(client, make_account, api_token):
    account, _ = make_account()
    response = client.put("/api/v1/account", json={"plan_type": "enterprise", "monthly_email_limit": 10**9,
                                                   "colour": "blue"}, headers=bearer(api_token(account)))
    assert response.status_code == 400
    details = response.get_json()["error"]["details"]
    assert {"field": "plan_type", "issue": "Read-only field."} in details
    assert {"field": "monthly_email_limit", "issue": "Read-only field."} in details
    assert any(d["field"] == "colour" and d["issue"].startswith("Unknown field") for d in details)
    assert db.session.get(Account, account.id).plan_type == "starter"


def test_empty_update_is_refused(client, make_account, api_token):
    account, _ = make_account()
    response = client.put("/api/v1/account", json={}, headers=bearer(api_token(account)))
    assert response.status_code == 400


def test_tenant_isolation(client, make_account, api_token):
    account_a, _ = make_account(name="Shop A")
    account_b, _ = make_account(name="Shop B")
    token_b = api_token(account_b)
    response = client.get("/api/v1/account", headers=bearer(token_b))
    assert response.get_json()["data"]["id"] == str(account_b.id)
    assert response.get_json()["data"]["name"] == "Shop B"
    # B's admin token changes B only; there is no way to address A's account.
    response = client.put("/api/v1/account", json={"name": "Taken over"}, headers=bearer(token_b))
    assert response.get_json()["data"]["id"] == str(account_b.id)
    db.session.expire_all()
    assert db.session.get(Account, account_a.id).name == "Shop A"
    assert client.put(f"/api/v1/account/{account_a.id}", json={"name": "x"},
                      headers=bearer(token_b)).status_code == 404
    db.session.expire_all()
    assert db.session.get(Account, account_a.id).name == "Shop A"
