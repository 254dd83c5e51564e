"""/api/v1/sending-domains: add, list, show, check against a local DNS server, remove; account:admin only;
every answer in the envelope."""
import pytest

from tests.api.conftest import bearer


@pytest.fixture
def app(dns_app):
    return dns_app()


def test_add_check_list_show_and_remove(client, make_account, api_token, dns_zone):
    account, owner = make_account()
    headers = bearer(api_token(account, "account:admin"))
    created = client.post("/api/v1/sending-domains", json={"domain": "Shop.Example"}, headers=headers)
    assert created.status_code == 201
    domain = created.get_json()["data"]
    assert domain["domain"] == "shop.example" and domain["status"] == "pending" and domain["verified"] is False
    assert domain["verify_record"]["value"].startswith("nudge-verify=")
    assert domain["dkim_record"]["name"] == f"{domain['dkim_selector']}._domainkey.shop.example"
    assert domain["checks"] == {"verify": None, "spf": None, "dkim": None, "dmarc": None}

    dns_zone.publish("shop.example", domain["verify_record"]["value"])
    checked = client.post(f"/api/v1/sending-domains/{domain['id']}/check", headers=headers)
    data = checked.get_json()["data"]
    assert checked.status_code == 200 and data["status"] == "verified" and data["verified_at"].endswith("Z")
    assert data["checks"]["verify"]["status"] == "ok" and data["checks"]["dkim"]["status"] == "missing"

    listed = client.get("/api/v1/sending-domains", headers=headers).get_json()
    assert [d["domain"] for d in listed["data"]] == ["shop.example"] and listed["meta"] == {"total": 1}
    assert client.get(f"/api/v1/sending-domains/{domain['id']}", headers=headers).get_json()["data"]["verified"]

    again = client.post("/api/v1/sending-domains", json={"domain": "shop.example"}, headers=headers)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"
    bad = client.post("/api/v1/sending-domains", json={"domain": "not a domain"}, headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["details"][0]["field"] == "domain"
    extra = client.post("/api/v1/sending-domains", json={"domain": "x.example", "verified": True}, headers=headers)
    assert extra.status_code == 400 and extra.get_json()["error"]["details"][0]["field"] == "verified"

    assert client.delete(f"/api/v1/sending-domains/{domain['id']}", headers=headers).status_code == 204
    gone = client.get(f"/api/v1/sending-domains/{domain['id']}", headers=headers)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "NOT_FOUND"


def test_other_scopes_and_other_accounts_are_refused(client, make_account, api_token):
    account, owner = make_account()
    admin = bearer(api_token(account, "account:admin"))
    domain_id = client.post("/api/v1/sending-domains", json={"domain": "shop.example"},
                            headers=admin).get_json()["data"]["id"]
    marketer = bearer(api_token(account, "campaigns:write campaigns:read contacts:write"))
    for method, path in (("get", "/api/v1/sending-domains"), ("post", f"/api/v1/sending-domains/{domain_id}/check"),
                         ("delete", f"/api/v1/sending-domains/{domain_id}")):
        response = getattr(client, method)(path, headers=marketer)
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "FORBIDDEN"
    other, _ = make_account()
    intruder = bearer(api_token(other, "account:admin"))
    assert client.get(f"/api/v1/sending-domains/{domain_id}", headers=intruder).status_code == 404
    assert client.delete(f"/api/v1/sending-domains/{domain_id}", headers=intruder).status_code == 404
    assert client.get("/api/v1/sending-domains", headers=intruder).get_json()["data"] == []
