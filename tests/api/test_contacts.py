"""/api/v1/contacts: filters, create/update/delete/restore, history, bulk tags, scopes, tenant isolation."""
import uuid

import pytest

from nudge.extensions import db
from nudge.services import custom_fields, suppressions
from tests.api.conftest import bearer, owner_of


@pytest.fixture
def shop(make_account, api_token):
    account, owner = make_account()
    custom_fields.create_field(owner, name="plan", type="choice", options=["free", "pro"])
    custom_fields.create_field(owner, name="seats", type="number")
    return account, bearer(api_token(account, "contacts:read contacts:write"))


def create(client, headers, **data):
    response = client.post("/api/v1/contacts", json=data, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]


def listed(client, headers, query=""):
    response = client.get("/api/v1/contacts" + query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return [c["email"] for c in response.get_json()["data"]]


def test_create_show_update_delete_restore(client, shop):
    _, headers = shop
    response = client.post("/api/v1/contacts", headers=headers, json={
        "email": " Ann@EXAMPLE.com", "first_name": "Ann", "tags": ["vip"], "custom_fields": {"plan": "pro"}})
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert response.headers["Location"] == f"/api/v1/contacts/{data['id']}"
    assert data["email"] == "Ann@example.com" and data["status"] == "active" and data["source"] == "api"
    assert data["tags"] == ["vip"] and data["custom_fields"] == {"plan": "pro"}
    assert data["created_at"].endswith("Z") and data["subscription_date"].endswith("Z")
    url = f"/api/v1/contacts/{data['id']}"
    assert client.get(url, headers=headers).get_json()["data"]["email"] == "Ann@example.com"
    updated = client.put(url, headers=headers, json={"last_name": "Lee", "custom_fields": {"seats": "3"}})
    assert updated.status_code == 200
    assert updated.get_json()["data"]["custom_fields"] == {"plan": "pro", "seats": 3}
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    assert listed(client, headers) == []
    assert listed(client, headers, "?status=deleted") == ["Ann@example.com"]
    restored = client.post(url + "/restore", headers=headers)
    assert restored.status_code == 200 and restored.get_json()["data"]["status"] == "active"
    assert listed(client, headers) == ["Ann@example.com"]


def test_duplicate_is_409_and_bad_input_400_with_paths(client, shop):
    _, headers = shop
    create(client, headers, email="ann@example.com")
    response = client.post("/api/v1/contacts", headers=headers, json={"email": "ann@example.com"})
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "CONFLICT"
    response = client.post("/api/v1/contacts", headers=headers, json={
        "email": "nope", "custom_fields": {"seats": "many", "plan": "gold", "unknown": 1}, "id": "x", "color": 1})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert {d["field"] for d in error["details"]} == {"id", "color"}
    response = client.post("/api/v1/contacts", headers=headers, json={
        "email": "nope", "custom_fields": {"seats": "many", "plan": "gold", "unknown": 1}})
    fields = {d["field"] for d in response.get_json()["error"]["details"]}
    assert fields == {"email", "custom_fields.seats", "custom_fields.plan", "custom_fields.unknown"}
    response = client.post("/api/v1/contacts", headers=headers, json={"first_name": "No email"})
    assert response.get_json()["error"]["details"] == [{"field": "email", "issue": "Email address is required."}]


def test_deleted_address_is_revived_not_duplicated(client, shop):
    _, headers = shop
    first = create(client, headers, email="ann@example.com", first_name="Ann")
    client.delete(f"/api/v1/contacts/{first['id']}", headers=headers)
    again = create(client, headers, email="ann@example.com", last_name="Lee")
    assert again["id"] == first["id"] and again["status"] == "active"
    assert (again["first_name"], again["last_name"]) == ("Ann", "Lee")


def test_suppressed_address_never_active(client, shop):
    account, headers = shop
    suppressions.suppress(account.id, ["gone@example.com"], "hard_bounce")
    db.session.commit()
    data = create(client, headers, email="gone@example.com")
    assert data["status"] == "unsubscribed"
    response = client.put(f"/api/v1/contacts/{data['id']}", headers=headers, json={"status": "active"})
    assert response.status_code == 400
    assert "suppression list" in response.get_json()["error"]["message"]


def test_unsubscribe_via_update_suppresses(client, shop):
    account, headers = shop
    data = create(client, headers, email="ann@example.com")
    response = client.put(f"/api/v1/contacts/{data['id']}", headers=headers, json={"status": "unsubscribed"})
    assert response.get_json()["data"]["unsubscribed_at"]
    assert suppressions.is_suppressed(account.id, "ann@example.com")


def test_every_list_filter(client, shop):
    _, headers = shop
    a = create(client, headers, email="ann@example.com", first_name="Ann", last_name="Lee", tags=["customer", "vip"],
               custom_fields={"plan": "pro", "seats": 5})
    create(client, headers, email="bob@example.com", first_name="Bob", tags=["customer"],
           custom_fields={"plan": "free"})
    create(client, headers, email="carol@example.org", last_name="Lee")
    assert listed(client, headers, "?email=ANN@example.com") == ["ann@example.com"]
    assert listed(client, headers, "?q=lee&sort=email") == ["ann@example.com", "carol@example.org"]
    assert listed(client, headers, "?tag=customer&tag=vip") == ["ann@example.com"]
    assert listed(client, headers, "?tag=customer&sort=-email") == ["bob@example.com", "ann@example.com"]
    assert listed(client, headers, "?field.plan=free") == ["bob@example.com"]
    assert listed(client, headers, "?field.seats=5") == ["ann@example.com"]
    assert listed(client, headers, "?field.plan=") == ["carol@example.org"]
    assert listed(client, headers, "?status=active&sort=email") == ["ann@example.com", "bob@example.com",
                                                                    "carol@example.org"]
    assert listed(client, headers, "?created_after=2000-01-01&created_before=2999-01-01&sort=email")[0] == \
        "ann@example.com"
    assert listed(client, headers, "?created_after=2999-01-01") == []
    for query, field in (("?field.nope=1", "field.nope"), ("?field.seats=x", "field.seats"),
                         ("?status=gone", "status"), ("?sort=secret", "sort"), ("?created_after=soon", "created_after"),
                         ("?segment_id=zzz", "segment_id")):
        response = client.get("/api/v1/contacts" + query, headers=headers)
        assert response.status_code == 400, query
        assert response.get_json()["error"]["details"][0]["field"] == field
    page = client.get("/api/v1/contacts?per_page=2&sort=email", headers=headers).get_json()
    assert page["meta"] == {"total": 3, "page": 1, "per_page": 2}
    assert page["links"]["next"] == "/api/v1/contacts?page=2&per_page=2&sort=email"
    assert client.get(f"/api/v1/contacts/{a['id']}", headers=headers).status_code == 200


def test_history_paginated_newest_first(client, shop):
    _, headers = shop
    data = create(client, headers, email="ann@example.com")
    client.put(f"/api/v1/contacts/{data['id']}", headers=headers, json={"tags": ["a"]})
    body = client.get(f"/api/v1/contacts/{data['id']}/history?per_page=1", headers=headers).get_json()
    assert body["meta"]["total"] == 2
    types = [e["event_type"] for e in body["data"]]
    assert types in (["contact.tag_added"], ["contact.subscribed"])
    both = client.get(f"/api/v1/contacts/{data['id']}/history", headers=headers).get_json()["data"]
    assert {e["event_type"] for e in both} == {"contact.subscribed", "contact.tag_added"}
    assert client.get(f"/api/v1/contacts/{uuid.uuid4()}/history", headers=headers).status_code == 404


def test_bulk_tags_by_ids_and_filter(client, shop):
    _, headers = shop
    a = create(client, headers, email="ann@example.com", tags=["trial"])
    b = create(client, headers, email="bob@example.com")
    response = client.post("/api/v1/contacts/tags", headers=headers,
                           json={"add": ["vip"], "remove": ["trial"], "contact_ids": [a["id"], b["id"]]})
    assert response.status_code == 200
    assert response.get_json()["data"] == {"added": 2, "removed": 1}
    assert listed(client, headers, "?tag=vip&sort=email") == ["ann@example.com", "bob@example.com"]
    assert listed(client, headers, "?tag=trial") == []
    response = client.post("/api/v1/contacts/tags", headers=headers,
                           json={"remove": ["vip"], "filter": {"q": "bob"}})
    assert response.get_json()["data"] == {"added": 0, "removed": 1}
    assert listed(client, headers, "?tag=vip") == ["ann@example.com"]
    bad = client.post("/api/v1/contacts/tags", headers=headers, json={"add": ["x"], "filter": {"field.nope": 1}})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"][0]["field"] == "filter.field.nope"
    bad = client.post("/api/v1/contacts/tags", headers=headers, json={"add": ["x"]})
    assert bad.status_code == 400
    bad = client.post("/api/v1/contacts/tags", headers=headers, json={"add": ["x"], "contact_ids": ["nope"]})
    assert bad.get_json()["error"]["details"][0]["field"] == "contact_ids[0]"


def test_read_scope_cannot_write(client, shop, api_token):
    account, headers = shop
    data = create(client, headers, email="ann@example.com")
    read = bearer(api_token(account, "contacts:read"))
    assert client.get("/api/v1/contacts", headers=read).status_code == 200
    for method, url, body in (("post", "/api/v1/contacts", {"email": "x@example.com"}),
                              ("put", f"/api/v1/contacts/{data['id']}", {"first_name": "X"}),
                              ("delete", f"/api/v1/contacts/{data['id']}", None),
                              ("post", f"/api/v1/contacts/{data['id']}/restore", None),
                              ("post", "/api/v1/contacts/tags", {"add": ["x"], "filter": {}})):
        response = getattr(client, method)(url, headers=read, json=body)
        assert response.status_code == 403, url
        assert response.get_json()["error"]["code"] == "FORBIDDEN"
    other = bearer(api_token(account, "campaigns:read"))
    assert client.get("/api/v1/contacts", headers=other).status_code == 403


def test_tenant_isolation(client, shop, make_account, api_token):
    _, headers = shop
    a = create(client, headers, email="ann@example.com", tags=["vip"])
    other_account, _ = make_account()
    theirs = bearer(api_token(other_account, "contacts:read contacts:write"))
    create(client, theirs, email="zed@example.com")
    url = f"/api/v1/contacts/{a['id']}"
    assert client.get(url, headers=theirs).status_code == 404
    assert client.put(url, headers=theirs, json={"first_name": "X"}).status_code == 404
    assert client.delete(url, headers=theirs).status_code == 404
    assert client.post(url + "/restore", headers=theirs).status_code == 404
    assert client.get(url + "/history", headers=theirs).status_code == 404
    body = client.get("/api/v1/contacts", headers=theirs).get_json()
    assert [c["email"] for c in body["data"]] == ["zed@example.com"] and body["meta"]["total"] == 1
    response = client.post("/api/v1/contacts/tags", headers=theirs, json={"add": ["x"], "contact_ids": [a["id"]]})
    assert response.get_json()["data"]["added"] == 0
    response = client.post("/api/v1/contacts/tags", headers=theirs, json={"remove": ["vip"], "filter": {}})
    assert response.get_json()["data"]["removed"] == 0
    assert listed(client, headers, "?tag=vip") == ["ann@example.com"]
    # The same address can exist in both accounts.
    create(client, theirs, email="ann@example.com")


def test_segment_filter(client, shop, make_account, api_token):
    from nudge.services import segments
    account, headers = shop
    create(client, headers, email="ann@example.com", tags=["vip"])
    create(client, headers, email="bob@example.com")
    owner = owner_of(account)
    vips = segments.create_segment(owner, "VIPs", conditions={
        "match": "all", "conditions": [{"field": "tags", "op": "contains_any", "value": ["vip"]}]})
    assert listed(client, headers, f"?segment_id={vips.id}") == ["ann@example.com"]
    other, _ = make_account()
    theirs = bearer(api_token(other, "contacts:read"))
    assert client.get(f"/api/v1/contacts?segment_id={vips.id}", headers=theirs).status_code == 404


def test_history_names_the_campaign_and_the_clicked_url(client, shop):
    from nudge.models import Contact
    from nudge.services import tracking
    from tests.campaign_helpers import sent_message
    account, headers = shop
    data = create(client, headers, email="ann@example.com")
    campaign, message = sent_message(account, db.session.get(Contact, uuid.UUID(data["id"])))
    tracking.record_click(message.id, "https://shop.example/spring")
    events = client.get(f"/api/v1/contacts/{data['id']}/history", headers=headers).get_json()["data"]
    clicked = next(e for e in events if e["event_type"] == "email.clicked")
    assert clicked["campaign_id"] == str(campaign.id) and clicked["campaign_name"] == "Spring"
    assert clicked["url"] == "https://shop.example/spring"
    subscribed = next(e for e in events if e["event_type"] == "contact.subscribed")
    assert subscribed["campaign_name"] is None and subscribed["url"] is None
