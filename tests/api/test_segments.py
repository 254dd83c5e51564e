"""/api/v1/segments: CRUD, live counts, a segment's contacts, static members, scopes and tenant isolation."""
import pytest

from nudge.extensions import db
from nudge.models import Contact
from tests.api.conftest import bearer

GMAIL = {"match": "all", "conditions": [{"field": "email", "op": "ends_with", "value": "@gmail.com"}]}


def add_contacts(account, *emails, **values):
    contacts = [Contact(account_id=account.id, email=email, custom_fields={}, **values) for email in emails]
    db.session.add_all(contacts)
    db.session.commit()
    return contacts


@pytest.fixture
def shop(make_account, api_token):
    account, owner = make_account()
    contacts = add_contacts(account, "a@gmail.com", "b@gmail.com", "c@example.com")
    return account, bearer(api_token(account, "contacts:read contacts:write")), contacts


def test_create_list_show_update_delete(client, shop):
    account, auth, _ = shop
    response = client.post("/api/v1/segments", json={"name": "Gmail", "conditions": GMAIL}, headers=auth)
    assert response.status_code == 201, response.get_json()
    data = response.get_json()["data"]
    assert data["name"] == "Gmail" and data["type"] == "dynamic" and data["contact_count"] == 2
    assert data["conditions"] == GMAIL and data["last_calculated"].endswith("Z")
    segment_id = data["id"]

    listing = client.get("/api/v1/segments", headers=auth).get_json()
    assert [s["id"] for s in listing["data"]] == [segment_id] and listing["meta"]["total"] == 1

    add_contacts(account, "d@gmail.com")
    assert client.get(f"/api/v1/segments/{segment_id}", headers=auth).get_json()["data"]["contact_count"] == 3

    changed = {"match": "any", "conditions": [{"field": "email", "op": "eq", "value": "C@example.com"}]}
    response = client.put(f"/api/v1/segments/{segment_id}", json={"name": "Just C", "conditions": changed},
                          headers=auth)
    assert response.status_code == 200
    assert response.get_json()["data"]["contact_count"] == 1
    assert client.put(f"/api/v1/segments/{segment_id}", json={"type": "static"},
                      headers=auth).get_json()["error"]["details"][0]["field"] == "type"

    assert client.post("/api/v1/segments", json={"name": "just c", "conditions": GMAIL},
                       headers=auth).status_code == 409
    assert client.delete(f"/api/v1/segments/{segment_id}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/segments/{segment_id}", headers=auth).status_code == 404


def test_invalid_conditions_point_at_the_path(client, shop):
    _, auth, _ = shop
    conditions = {"match": "all", "conditions": [
        {"field": "email", "op": "is_set"},
        {"match": "any", "conditions": [{"field": "tags", "op": "contains_any", "value": "vip"}]}]}
    response = client.post("/api/v1/segments", json={"name": "Bad", "conditions": conditions}, headers=auth)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"] == [{"field": "conditions[1].conditions[0].value", "issue": "Must be a non-empty list."}]
    response = client.post("/api/v1/segments/count", json={"conditions": {"match": "all", "conditions": [
        {"event": "opened", "op": "has", "within_days": 0}]}}, headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "conditions[0].within_days"
    response = client.post("/api/v1/segments", json={"name": "Dyn"}, headers=auth)
    assert response.get_json()["error"]["details"] == [{"field": "conditions", "issue": "Required for a dynamic segment."}]
    response = client.post("/api/v1/segments", json={"name": "X", "conditions": GMAIL, "colour": "red"}, headers=auth)
    assert response.get_json()["error"]["details"][0]["field"] == "colour"


@pytest.mark.parametrize("body, field", [
    ({"name": ["Gmail"], "conditions": GMAIL}, "name"),
    ({"name": {"text": "Gmail"}, "conditions": GMAIL}, "name"),
    ({"name": 42, "conditions": GMAIL}, "name"),
    ({"name": "Openers", "conditions": {"match": "all", "conditions": [{"event": {}, "op": "has"}]}},
     "conditions[0].event"),
    ({"name": "Openers", "conditions": {"match": "all", "conditions": [{"event": ["opened"], "op": "has"}]}},
     "conditions[0].event"),
])
def test_values_of_the_wrong_json_type_are_validation_errors(client, shop, body, field):
    _, auth, _ = shop
    response = client.post("/api/v1/segments", json=body, headers=auth)
    assert response.status_code == 400
    assert [d["field"] for d in response.get_json()["error"]["details"]] == [field]


def test_count_unsaved_conditions(client, shop):
    _, auth, _ = shop
    response = client.post("/api/v1/segments/count", json={"conditions": GMAIL}, headers=auth)
    assert response.status_code == 200
    assert response.get_json()["data"] == {"count": 2}
    assert client.post("/api/v1/segments/count", json={}, headers=auth).status_code == 400


def test_segment_contacts_are_paginated(client, shop):
    account, auth, _ = shop
    segment_id = client.post("/api/v1/segments", json={"name": "Gmail", "conditions": GMAIL},
                             headers=auth).get_json()["data"]["id"]
    body = client.get(f"/api/v1/segments/{segment_id}/contacts?per_page=1", headers=auth).get_json()
    assert body["meta"]["total"] == 2 and len(body["data"]) == 1
    assert body["data"][0]["email"].endswith("@gmail.com")
    assert "next" in body["links"]


def test_static_members(client, shop, make_account):
    account, auth, contacts = shop
    other, _ = make_account()
    (stranger,) = add_contacts(other, "x@gmail.com")
    response = client.post("/api/v1/segments", json={"name": "Picked", "type": "static"}, headers=auth)
    assert response.status_code == 201
    segment = response.get_json()["data"]
    assert segment["conditions"] == {"match": "all", "conditions": []} and segment["contact_count"] == 0
    url = f"/api/v1/segments/{segment['id']}/members"
    ids = [str(contacts[0].id), str(contacts[2].id), str(stranger.id)]
    response = client.post(url, json={"contact_ids": ids}, headers=auth)
    assert response.status_code == 200
    assert response.get_json()["data"] == {"added": 2, "contact_count": 2}
    emails = [c["email"] for c in client.get(f"/api/v1/segments/{segment['id']}/contacts",
                                             headers=auth).get_json()["data"]]
    assert sorted(emails) == ["a@gmail.com", "c@example.com"]
    response = client.delete(url, json={"contact_ids": [str(contacts[0].id)]}, headers=auth)
    assert response.get_json()["data"] == {"removed": 1, "contact_count": 1}
    response = client.post(url, json={"contact_ids": ["nope"]}, headers=auth)
    assert response.get_json()["error"]["details"][0]["field"] == "contact_ids[0]"


def test_read_scope_cannot_write(client, shop, api_token):
    account, auth, _ = shop
    segment_id = client.post("/api/v1/segments", json={"name": "Gmail", "conditions": GMAIL},
                             headers=auth).get_json()["data"]["id"]
    read = bearer(api_token(account, "contacts:read"))
    assert client.get("/api/v1/segments", headers=read).status_code == 200
    assert client.post("/api/v1/segments/count", json={"conditions": GMAIL}, headers=read).status_code == 200
    for method, url, body in (("post", "/api/v1/segments", {"name": "X", "conditions": GMAIL}),
                              ("put", f"/api/v1/segments/{segment_id}", {"name": "Y"}),
                              ("delete", f"/api/v1/segments/{segment_id}", None),
                              ("post", f"/api/v1/segments/{segment_id}/members", {"contact_ids": []})):
        response = getattr(client, method)(url, json=body, headers=read)
        assert response.status_code == 403, (method, url)
        assert response.get_json()["error"]["code"] == "FORBIDDEN"
    other_scope = bearer(api_token(account, "campaigns:read"))
    assert client.get("/api/v1/segments", headers=other_scope).status_code == 403


def test_tenant_isolation(client, shop, make_account, api_token):
    account, auth, contacts = shop
    static_id = client.post("/api/v1/segments", json={"name": "Picked", "type": "static"},
                            headers=auth).get_json()["data"]["id"]
    dynamic_id = client.post("/api/v1/segments", json={"name": "Gmail", "conditions": GMAIL},
                             headers=auth).get_json()["data"]["id"]
    other, _ = make_account()
    (theirs,) = add_contacts(other, "z@gmail.com")
    them = bearer(api_token(other))
    assert client.get("/api/v1/segments", headers=them).get_json()["data"] == []
    for segment_id in (static_id, dynamic_id):
        assert client.get(f"/api/v1/segments/{segment_id}", headers=them).status_code == 404
        assert client.get(f"/api/v1/segments/{segment_id}/contacts", headers=them).status_code == 404
        assert client.put(f"/api/v1/segments/{segment_id}", json={"name": "Mine"}, headers=them).status_code == 404
        assert client.delete(f"/api/v1/segments/{segment_id}", headers=them).status_code == 404
    response = client.post(f"/api/v1/segments/{static_id}/members", json={"contact_ids": [str(theirs.id)]},
                           headers=them)
    assert response.status_code == 404
    # Their count only ever sees their contacts, and ours never includes theirs.
    assert client.post("/api/v1/segments/count", json={"conditions": GMAIL}, headers=them).get_json()["data"] == {"count": 1}
    response = client.post(f"/api/v1/segments/{static_id}/members", json={"contact_ids": [str(theirs.id)]}, headers=auth)
    assert response.get_json()["data"]["added"] == 0
    assert client.get(f"/api/v1/segments/{dynamic_id}", headers=auth).get_json()["data"]["contact_count"] == 2
