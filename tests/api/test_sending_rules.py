"""The API's answers to an unverified From (400 VALIDATION_ERROR on from_email) and to the hourly test cap
(429 RATE_LIMITED with Retry-After), in the error envelope."""
import pytest

from nudge.services import sending_domains
from tests.api.conftest import bearer
from tests.api.test_campaigns import ready_payload, with_address
from tests.campaign_helpers import add_contacts, fake_pipeline


@pytest.fixture
def app(make_app):
    return make_app(REQUIRE_VERIFIED_DOMAINS=True, TEST_SENDS_PER_HOUR=3)


def test_an_unverified_from_is_a_400_on_send_schedule_and_test(client, make_account, api_token, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    with_address(account)
    add_contacts(account, "ann@example.org")
    headers = bearer(api_token(account, "campaigns:write campaigns:read"))
    created = client.post("/api/v1/campaigns", json=ready_payload(from_email="news@shop.example"),
                          headers=headers).get_json()["data"]
    assert {"code": "from_email_unverified", "blocking": True} == {
        key: value for key, value in created["readiness"][0].items() if key != "message"}
    for path, body in (("send", {}), ("send", {"scheduled_at": "2099-01-01T09:00:00Z"}),
                       ("test", {"emails": ["me@x.example"]})):
        response = client.post(f"/api/v1/campaigns/{created['id']}/{path}", json=body, headers=headers)
        error = response.get_json()["error"]
        assert response.status_code == 400 and error["code"] == "VALIDATION_ERROR", (path, body)
        assert [d["field"] for d in error["details"]] == ["from_email"]
        assert "not a verified sender" in error["message"] + error["details"][0]["issue"]
    assert pipeline.calls == []
    # A confirmed single sender may send.
    sender = sending_domains.add_sender(owner, "news@shop.example")
    sending_domains.confirm_sender(sending_domains.confirm_link(sender).rpartition("/")[2])
    assert client.post(f"/api/v1/campaigns/{created['id']}/send", json={}, headers=headers).status_code == 200


def test_test_sends_beyond_the_hourly_cap_are_429_with_retry_after(client, make_account, api_token, monkeypatch):
    fake_pipeline(monkeypatch)
    account, owner = make_account()
    sender = sending_domains.add_sender(owner, "news@shop.example")
    sending_domains.confirm_sender(sending_domains.confirm_link(sender).rpartition("/")[2])
    headers = bearer(api_token(account, "campaigns:write"))
    campaign_id = client.post("/api/v1/campaigns", json=ready_payload(from_email="news@shop.example"),
                              headers=headers).get_json()["data"]["id"]
    # The sender's confirmation mail was the first of the hour's three test emails.
    ok = client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"emails": ["a@x.example", "b@x.example"]},
                     headers=headers)
    assert ok.status_code == 200
    refused = client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"emails": ["d@x.example"]}, headers=headers)
    assert refused.status_code == 429
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    error = refused.get_json()["error"]
    assert error["code"] == "RATE_LIMITED" and "3 test emails an hour" in error["message"]
    assert error["details"] == [{"field": "emails", "issue": "At most 3 test emails an hour."}]
