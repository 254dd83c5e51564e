"""/api/v1/custom-fields: definitions, the 50-field limit, value validation, scopes and isolation."""
import pytest

from tests.api.conftest import bearer


@pytest.fixture
def headers(make_account, api_token):
    account, _ = make_account()
    return bearer(api_token(account, "contacts:read contacts:write"))


def test_create_list_update_delete(client, headers):
    response = client.post("/api/v1/custom-fields", headers=headers,
                           json={"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]})
    assert response.status_code == 201
    assert response.get_json()["data"]["options"] == ["free", "pro"]
    client.post("/api/v1/custom-fields", headers=headers, json={"name": "company"})
    body = client.get("/api/v1/custom-fields", headers=headers).get_json()
    assert [f["name"] for f in body["data"]] == ["plan", "company"]
    assert body["data"][1] | {"created_at": None} == {"name": "company", "label": "Company", "type": "text",
                                                      "options": None, "created_at": None}
    assert body["meta"]["total"] == 2
    response = client.put("/api/v1/custom-fields/plan", headers=headers, json={"label": "Subscription plan",
                                                                               "options": ["free", "pro", "team"]})
    assert response.status_code == 200 and response.get_json()["data"]["label"] == "Subscription plan"
    assert client.put("/api/v1/custom-fields/plan", headers=headers, json={"type": "text"}).status_code == 400
    contact = client.post("/api/v1/contacts", headers=headers,
                          json={"email": "a@example.com", "custom_fields": {"plan": "team", "company": "Acme"}})
    assert contact.status_code == 201
    assert client.delete("/api/v1/custom-fields/plan", headers=headers).status_code == 204
    data = client.get(f"/api/v1/contacts/{contact.get_json()['data']['id']}", headers=headers).get_json()["data"]
    assert data["custom_fields"] == {"company": "Acme"}
    assert client.delete("/api/v1/custom-fields/plan", headers=headers).status_code == 404


def test_validation(client, headers):
    for body, field in (({"name": "Bad Name"}, "name"), ({"name": "email"}, "name"),
                        ({"name": "x", "type": "color"}, "type"), ({"name": "x", "type": "choice"}, "options"),
                        ({"name": "x", "extra": 1}, "extra")):
        response = client.post("/api/v1/custom-fields", headers=headers, json=body)
        assert response.status_code == 400, body
        assert response.get_json()["error"]["details"][0]["field"] == field
    client.post("/api/v1/custom-fields", headers=headers, json={"name": "dup"})
    assert client.post("/api/v1/custom-fields", headers=headers, json={"name": "dup"}).status_code == 409


def test_values_are_validated_by_type(client, headers):
    for name, kind in (("n", "number"), ("d", "date"), ("b", "boolean")):
        client.post("/api/v1/custom-fields", headers=headers, json={"name": name, "type": kind})
    response = client.post("/api/v1/contacts", headers=headers, json={
        "email": "a@example.com", "custom_fields": {"n": "ten", "d": "31/12/2024", "b": "maybe"}})
    assert response.status_code == 400
    assert {d["field"] for d in response.get_json()["error"]["details"]} == {
        "custom_fields.n", "custom_fields.d", "custom_fields.b"}
    response = client.post("/api/v1/contacts", headers=headers, json={
        "email": "a@example.com", "custom_fields": {"n": "1,200.5", "d": "2024-12-31", "b": "yes"}})
    assert response.get_json()["data"]["custom_fields"] == {"n": 1200.5, "d": "2024-12-31", "b": True}


def test_fifty_field_limit(client, headers):
    for i in range(50):
        assert client.post("/api/v1/custom-fields", headers=headers, json={"name": f"f{i}"}).status_code == 201
    response = client.post("/api/v1/custom-fields", headers=headers, json={"name": "one_more"})
    assert response.status_code == 400
    assert "50" in response.get_json()["error"]["message"]
    page = client.get("/api/v1/custom-fields?per_page=100", headers=headers).get_json()
    assert page["meta"]["total"] == 50


def test_read_scope_and_isolation(client, make_account, api_token, headers):
    client.post("/api/v1/custom-fields", headers=headers, json={"name": "mine"})
    account, _ = make_account()
    read = bearer(api_token(account, "contacts:read"))
    assert client.get("/api/v1/custom-fields", headers=read).get_json()["data"] == []
    assert client.post("/api/v1/custom-fields", headers=read, json={"name": "x"}).status_code == 403
    assert client.put("/api/v1/custom-fields/mine", headers=read, json={"label": "x"}).status_code == 403
    write = bearer(api_token(account, "contacts:write"))
    assert client.put("/api/v1/custom-fields/mine", headers=write, json={"label": "x"}).status_code == 404
    assert client.delete("/api/v1/custom-fields/mine", headers=write).status_code == 404
    # Another account's field is unknown here.
    response = client.post("/api/v1/contacts", headers=write, json={"email": "a@example.com",
                                                                     "custom_fields": {"mine": "x"}})
    assert response.status_code == 400


def test_number_values_must_be_finite(client, headers):
    client.post("/api/v1/custom-fields", headers=headers, json={"name": "n", "type": "number"})
    for value in ("nan", "Infinity", "-inf"):
        response = client.post("/api/v1/contacts", headers=headers,
                               json={"email": "a@example.com", "custom_fields": {"n": value}})
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"] == [{"field": "custom_fields.n",
                                     "issue": f"The number field 'n' must be finite, not {value!r}."}]
    # 1e999 is valid JSON that Python reads as infinity.
    response = client.post("/api/v1/contacts", headers={**headers, "Content-Type": "application/json"},
                           data='{"email": "a@example.com", "custom_fields": {"n": 1e999}}')
    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "custom_fields.n"
