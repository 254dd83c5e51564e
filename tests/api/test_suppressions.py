"""/api/v1/suppressions: list with search, bulk add as JSON or CSV, remove, scopes and isolation."""
import pytest

from nudge.extensions import db
from nudge.services import contacts
from tests.api.conftest import bearer


@pytest.fixture
def shop(make_account, api_token):
    account, owner = make_account()
    return account, owner, bearer(api_token(account, "contacts:read contacts:write"))


def listed(client, headers, query=""):
    return [s["email"] for s in client.get("/api/v1/suppressions" + query, headers=headers).get_json()["data"]]


def test_add_json_counts_and_list(client, shop):
    _, _, headers = shop
    response = client.post("/api/v1/suppressions", headers=headers, json={
        "emails": ["a@example.com", " B@Example.com", "a@example.com", "not an email"], "reason": "manual"})
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert (data["added"], data["already"]) == (2, 0)
    assert [i["email"] for i in data["invalid"]] == ["not an email"]
    again = client.post("/api/v1/suppressions", headers=headers, json={"emails": ["a@example.com"]}).get_json()["data"]
    assert (again["added"], again["already"]) == (0, 1)
    assert sorted(listed(client, headers)) == ["B@example.com", "a@example.com"]
    assert listed(client, headers, "?q=b@") == ["B@example.com"]
    body = client.get("/api/v1/suppressions?per_page=1", headers=headers).get_json()
    assert body["meta"]["total"] == 2 and body["data"][0]["reason"] == "manual"
    bad = client.post("/api/v1/suppressions", headers=headers, json={"emails": ["x@example.com"], "reason": "bored"})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"][0]["field"] == "reason"


def test_add_csv(client, shop):
    _, _, headers = shop
    csv_body = "email;name\nann@example.com;Ann\nbob@example.com;Bob\n\nbroken;X\n"
    response = client.post("/api/v1/suppressions?reason=complaint", data=csv_body.encode(),
                           headers={**headers, "Content-Type": "text/csv"})
    assert response.status_code == 200, response.get_json()
    data = response.get_json()["data"]
    assert (data["added"], data["already"], len(data["invalid"])) == (2, 0, 1)
    rows = client.get("/api/v1/suppressions", headers=headers).get_json()["data"]
    assert {r["reason"] for r in rows} == {"complaint"}


def test_suppressing_unsubscribes_the_contact_and_removing_does_not_reactivate(client, shop):
    _, owner, headers = shop
    contact = contacts.create_contact(owner, {"email": "ann@example.com"})
    client.post("/api/v1/suppressions", headers=headers, json={"emails": ["ann@example.com"]})
    db.session.expire_all()
    assert contact.status == "unsubscribed"
    response = client.delete("/api/v1/suppressions/ann@example.com", headers=headers)
    assert response.status_code == 204
    assert listed(client, headers) == []
    db.session.expire_all()
    assert contact.status == "unsubscribed"
    assert client.delete("/api/v1/suppressions/ann@example.com", headers=headers).status_code == 404


def test_bulk_remove(client, shop):
    _, _, headers = shop
    client.post("/api/v1/suppressions", headers=headers, json={"emails": ["a@example.com", "b@example.com"]})
    response = client.delete("/api/v1/suppressions", headers=headers,
                             json={"emails": ["a@example.com", "b@example.com", "c@example.com"]})
    assert response.get_json()["data"] == {"removed": 2}


def test_suppressions_survive_contact_deletion(client, shop):
    _, owner, headers = shop
    contact = contacts.create_contact(owner, {"email": "ann@example.com"})
    contacts.unsubscribe_contact(owner, contact.id)
    contacts.delete_contact(owner, contact.id)
    assert listed(client, headers) == ["ann@example.com"]


def test_scopes_and_isolation(client, shop, make_account, api_token):
    account, _, headers = shop
    client.post("/api/v1/suppressions", headers=headers, json={"emails": ["a@example.com"]})
    read = bearer(api_token(account, "contacts:read"))
    assert listed(client, read) == ["a@example.com"]
    assert client.post("/api/v1/suppressions", headers=read, json={"emails": ["x@example.com"]}).status_code == 403
    assert client.delete("/api/v1/suppressions/a@example.com", headers=read).status_code == 403
    other, _ = make_account()
    theirs = bearer(api_token(other, "contacts:read contacts:write"))
    assert listed(client, theirs) == []
    assert client.delete("/api/v1/suppressions/a@example.com", headers=theirs).status_code == 404
    assert client.delete("/api/v1/suppressions", headers=theirs, json={"emails": ["a@example.com"]}).get_json()[
        "data"] == {"removed": 0}
    assert listed(client, headers) == ["a@example.com"]
