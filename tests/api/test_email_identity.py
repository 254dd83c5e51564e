"""The API treats an address in another case as the same contact and the same suppression entry (issue 14)."""
import pytest

from nudge.services import contacts
from tests.api.conftest import bearer


@pytest.fixture
def shop(make_account, api_token):
    account, owner = make_account()
    ann = contacts.create_contact(owner, {"email": "Ann@example.com", "first_name": "Ann"})
    return account, ann, bearer(api_token(account, "contacts:read contacts:write"))


def test_create_in_another_case_is_409_and_creates_nothing(client, shop):
    _, ann, headers = shop
    response = client.post("/api/v1/contacts", headers=headers, json={"email": "ANN@example.com"})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "CONFLICT" and error["details"][0]["field"] == "email"
    listed = client.get("/api/v1/contacts", headers=headers).get_json()["data"]
    assert [(c["id"], c["email"]) for c in listed] == [(str(ann.id), "Ann@example.com")]


def test_lookup_by_email_in_any_case(client, shop):
    _, ann, headers = shop
    found = client.get("/api/v1/contacts?email=aNN@EXAMPLE.com", headers=headers).get_json()["data"]
    assert [c["id"] for c in found] == [str(ann.id)]


def test_import_updates_the_existing_contact_whatever_the_case(client, shop):
    _, ann, headers = shop
    response = client.post("/api/v1/contacts/import", headers=headers, json={
        "contacts": [{"email": "ann@EXAMPLE.com", "last_name": "Lee"}], "update_existing": True})
    data = response.get_json()["data"]
    assert (data["created"], data["updated"], data["errors"]) == (0, 1, [])
    shown = client.get(f"/api/v1/contacts/{ann.id}", headers=headers).get_json()["data"]
    assert (shown["email"], shown["last_name"]) == ("Ann@example.com", "Lee")


def test_suppressing_or_removing_any_spelling(client, shop):
    _, ann, headers = shop
    response = client.post("/api/v1/suppressions", headers=headers, json={"emails": ["ANN@EXAMPLE.COM"]})
    assert response.get_json()["data"]["added"] == 1
    again = client.post("/api/v1/suppressions", headers=headers, json={"emails": ["ann@example.com"]})
    assert (again.get_json()["data"]["added"], again.get_json()["data"]["already"]) == (0, 1)
    assert client.get(f"/api/v1/contacts/{ann.id}", headers=headers).get_json()["data"]["status"] == "unsubscribed"
    refused = client.put(f"/api/v1/contacts/{ann.id}", headers=headers, json={"status": "active"})
    assert refused.status_code == 400 and refused.get_json()["error"]["details"][0]["field"] == "status"
    assert client.delete("/api/v1/suppressions/ann@example.com", headers=headers).status_code == 204
    assert client.get("/api/v1/suppressions", headers=headers).get_json()["data"] == []
