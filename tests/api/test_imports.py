"""POST /api/v1/contacts/import (JSON and CSV), /api/v1/imports, GET /api/v1/contacts/export."""
import csv
import io
import json

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import AuditLog, Contact
from nudge.services import custom_fields, imports
from tests.api.conftest import bearer, owner_of


def post_json(client, token, body):
    return client.post("/api/v1/contacts/import", json=body, headers=bearer(token))


def upload(client, token, text, **form):
    data = {"file": (io.BytesIO(text.encode("utf-8") if isinstance(text, str) else text), "people.csv"), **form}
    return client.post("/api/v1/contacts/import", data=data, headers=bearer(token),
                       content_type="multipart/form-data")


def test_json_import_answers_counts_and_errors(client, make_account, api_token):
    account, owner = make_account()
    custom_fields.create_field(owner, name="plan", type="choice", options=["free", "pro"])
    token = api_token(account, "contacts:write")
    response = post_json(client, token, {"contacts": [
        {"email": "a@example.com", "first_name": "A", "custom_fields": {"plan": "pro"}},
        {"email": "nope"},
        {"email": "b@example.com", "custom_fields": {"plan": "gold"}},
    ], "tags": ["api"], "update_existing": False})
    assert response.status_code == 200, response.get_json()
    data = response.get_json()["data"]
    assert (data["created"], data["updated"], data["skipped"]) == (1, 0, 0)
    assert [(e["row"], e["field"]) for e in data["errors"]] == [(2, "email"), (3, "custom_fields.plan")]
    again = post_json(client, token, {"contacts": [{"email": "a@example.com", "first_name": "Z"}],
                                      "update_existing": True}).get_json()["data"]
    assert (again["created"], again["updated"], again["skipped"], again["errors"]) == (0, 1, 0, [])
    contact = db.session.scalar(sa.select(Contact).where(Contact.account_id == account.id))
    assert (contact.first_name, contact.tags) == ("Z", ["api"])


def test_json_import_limits_and_validation(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "contacts:write")
    too_many = post_json(client, token, {"contacts": [{"email": f"u{i}@example.com"} for i in range(10_001)]})
    assert too_many.status_code == 400
    assert too_many.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert too_many.get_json()["error"]["details"][0]["field"] == "contacts"
    assert post_json(client, token, {"contacts": "x"}).status_code == 400
    assert post_json(client, token, {"people": []}).status_code == 400
    assert post_json(client, token, {"contacts": [], "update_existing": "maybe"}).status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0


def test_scopes(client, make_account, api_token):
    account, _ = make_account()
    reader = api_token(account, "contacts:read")
    response = post_json(client, reader, {"contacts": [{"email": "a@example.com"}]})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert client.get("/api/v1/imports", headers=bearer(reader)).status_code == 200
    assert client.get("/api/v1/contacts/export", headers=bearer(reader)).status_code == 200
    other = api_token(account, "campaigns:read")
    assert client.get("/api/v1/imports", headers=bearer(other)).status_code == 403


def test_csv_upload_returns_202_and_import_resource(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "contacts:write contacts:read")
    response = upload(client, token, "Email;Vorname;Score\nx@example.com;Xa;5\nbroken;B;1\n",
                      mapping=json.dumps({"Email": "email", "Vorname": "first_name",
                                          "Score": {"field": "custom.score", "type": "number"}}),
                      update_existing="true", tags="fair,2024")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    imp = body["data"]
    assert response.headers["Location"] == f"/api/v1/imports/{imp['id']}"
    assert body["links"]["errors"] == f"/api/v1/imports/{imp['id']}/errors"
    shown = client.get(f"/api/v1/imports/{imp['id']}", headers=bearer(token)).get_json()["data"]
    assert shown["status"] == "completed"  # Huey runs inline in the tests
    assert (shown["created"], shown["updated"], shown["skipped"], shown["error_count"]) == (1, 0, 0, 1)
    assert shown["percent"] == 100 and shown["tags"] == ["fair", "2024"] and shown["update_existing"] is True
    assert shown["errors"][0]["row"] == 3 and shown["errors"][0]["field"] == "Email"
    errors = client.get(f"/api/v1/imports/{imp['id']}/errors", headers=bearer(token)).get_json()
    assert errors["meta"]["total"] == 1
    assert errors["data"][0]["row"] == 3 and errors["data"][0]["value"] == "broken"
    assert errors["data"][0]["message"] == "Must be a valid email address: an email address must have an @-sign."
    listing = client.get("/api/v1/imports", headers=bearer(token)).get_json()
    assert [i["id"] for i in listing["data"]] == [imp["id"]]
    contact = db.session.scalar(sa.select(Contact).where(Contact.account_id == account.id))
    assert (contact.first_name, contact.custom_fields, contact.tags) == ("Xa", {"score": 5}, ["fair", "2024"])


def test_csv_upload_guesses_mapping_and_rejects_bad_files(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "contacts:write")
    ok = upload(client, token, "E-mail Address,First Name\nq@example.com,Q\n")
    assert ok.status_code == 202
    assert ok.get_json()["data"]["mapping"] == {"E-mail Address": "email", "First Name": "first_name"}
    no_email = upload(client, token, "name,city\nA,B\n")
    assert no_email.status_code == 400
    assert no_email.get_json()["error"]["details"][0]["field"] == "mapping"
    empty = upload(client, token, "")
    assert empty.status_code == 400
    missing = client.post("/api/v1/contacts/import", data={"x": "1"}, headers=bearer(token),
                          content_type="multipart/form-data")
    assert missing.status_code == 400


def test_imports_are_isolated_between_accounts(client, make_account, api_token):
    a, _ = make_account()
    b, _ = make_account()
    token_a = api_token(a, "contacts:write contacts:read")
    token_b = api_token(b, "contacts:read")
    imp_id = post_json(client, token_a, {"contacts": [{"email": "bad"}]}).get_json()["data"]["import_id"]
    assert client.get(f"/api/v1/imports/{imp_id}", headers=bearer(token_b)).status_code == 404
    assert client.get(f"/api/v1/imports/{imp_id}/errors", headers=bearer(token_b)).status_code == 404
    assert client.get("/api/v1/imports", headers=bearer(token_b)).get_json()["meta"]["total"] == 0


def seed_contacts(account, owner):
    custom_fields.create_field(owner, name="plan")
    imports.import_contacts(owner, [
        {"email": "a@example.com", "first_name": "Ann", "tags": ["vip", "news"], "custom_fields": {"plan": "pro"}},
        {"email": "b@example.com", "first_name": "Bob", "tags": ["news"]},
        {"email": "c@example.com", "last_name": "Cole"},
    ])


def test_export_csv_streams_with_filters_and_audit(client, make_account, api_token):
    account, owner = make_account()
    seed_contacts(account, owner)
    token = api_token(account, "contacts:read")
    response = client.get("/api/v1/contacts/export?format=csv&tag=news&sort=email", headers=bearer(token))
    assert response.status_code == 200
    assert response.is_streamed
    assert response.headers["Content-Disposition"].startswith("attachment; filename=\"contacts-")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == ["email", "first_name", "last_name", "status", "tags", "subscription_date",
                             "created_at", "plan"]
    assert [(r["email"], r["tags"], r["plan"]) for r in rows] == [("a@example.com", "vip,news", "pro"),
                                                                  ("b@example.com", "news", "")]
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.account_id == account.id,
                                                        AuditLog.action == "contact.exported"))
    assert entry.meta == {"format": "csv", "count": 2}


def test_export_json_is_an_array_of_contacts(client, make_account, api_token):
    account, owner = make_account()
    seed_contacts(account, owner)
    token = api_token(account, "contacts:read")
    response = client.get("/api/v1/contacts/export?format=json&sort=email", headers=bearer(token))
    assert response.status_code == 200 and response.is_streamed
    data = json.loads(response.get_data(as_text=True))
    assert [c["email"] for c in data] == ["a@example.com", "b@example.com", "c@example.com"]
    assert data[0]["custom_fields"] == {"plan": "pro"} and data[2]["tags"] == []
    assert client.get("/api/v1/contacts/export?format=xml", headers=bearer(token)).status_code == 400
    assert client.get("/api/v1/contacts/export?status=sleeping", headers=bearer(token)).status_code == 400
    empty = client.get("/api/v1/contacts/export?format=json&tag=none", headers=bearer(token))
    assert json.loads(empty.get_data(as_text=True)) == []


def test_export_never_includes_another_accounts_contacts(client, make_account, api_token):
    a, owner_a = make_account()
    b, _ = make_account()
    seed_contacts(a, owner_a)
    token_b = api_token(b, "contacts:read")
    response = client.get("/api/v1/contacts/export?format=json", headers=bearer(token_b))
    assert json.loads(response.get_data(as_text=True)) == []
    assert owner_of(b) is not None


def test_json_errors_carry_the_value_and_permission_is_recorded(client, make_account, api_token):
    account, owner = make_account()
    custom_fields.create_field(owner, name="plan", type="choice", options=["free", "pro"])
    token = api_token(account, "contacts:write contacts:read")
    response = post_json(client, token, {"contacts": [{"email": "a@example.com"}, {"email": "nope"},
                                                      {"email": "b@example.com", "custom_fields": {"plan": "gold"}}],
                                         "permission_confirmed": True})
    assert response.status_code == 200, response.get_json()
    data = response.get_json()["data"]
    assert [(e["row"], e["field"], e["value"]) for e in data["errors"]] == [
        (2, "email", "nope"), (3, "custom_fields.plan", "gold")]
    assert data["errors"][1]["message"] == "Must be one of: free, pro."
    shown = client.get(f"/api/v1/imports/{data['import_id']}", headers=bearer(token)).get_json()["data"]
    assert shown["permission_confirmed"] is True and shown["permission_confirmed_by"].startswith("api:")
    assert shown["permission_confirmed_at"].endswith("Z")
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "contact.imported"))
    assert entry.resources == [f"import:{data['import_id']}"] and entry.meta["permission_confirmed"] is True

    plain = post_json(client, token, {"contacts": [{"email": "c@example.com"}]}).get_json()["data"]
    shown = client.get(f"/api/v1/imports/{plain['import_id']}", headers=bearer(token)).get_json()["data"]
    assert shown["permission_confirmed"] is False and shown["permission_confirmed_at"] is None
    bad = post_json(client, token, {"contacts": [{"email": "d@example.com"}], "permission_confirmed": "maybe"})
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert bad.get_json()["error"]["details"][0]["field"] == "permission_confirmed"


def test_csv_upload_permission_and_a_new_choice_field(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "contacts:write contacts:read")
    response = upload(client, token, "email,plan\nann@example.com,pro\nbob@example.com,gold\n",
                      mapping=json.dumps({"email": "email",
                                          "plan": {"field": "custom.plan", "type": "choice", "options": ["free", "pro"]}}),
                      permission_confirmed="true")
    assert response.status_code == 202, response.get_json()
    imp = response.get_json()["data"]
    assert imp["permission_confirmed"] is True
    assert [(e["row"], e["field"], e["value"]) for e in imp["errors"]] == [(3, "plan", "gold")]
    field = custom_fields.get_field(account.id, "plan")
    assert (field.type, field.options) == ("choice", ["free", "pro"])
    refused = upload(client, token, "email,tier\nann@example.com,x\n",
                     mapping=json.dumps({"email": "email", "tier": {"field": "custom.tier", "type": "choice"}}))
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"][0]["field"] == "mapping.custom.tier.options"
    bogus = upload(client, token, "email,tier\nann@example.com,x\n",
                   mapping=json.dumps({"email": "email", "tier": {"field": "custom.tier", "type": "colour"}}))
    assert bogus.status_code == 400
    assert "text, number, date, boolean, choice" in bogus.get_json()["error"]["details"][0]["issue"]
