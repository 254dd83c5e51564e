"""The Campaigns resource of the API: the spec's fields plus audience, status, stats and readiness;
drafts only editable; send/schedule/test and the status changes; scopes and tenant isolation."""
import uuid

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Campaign
from nudge.services import segments, templates
from tests.api.conftest import bearer
from tests.campaign_helpers import READY_HTML, add_contacts, fake_pipeline

SPEC_FIELDS = {"id", "name", "subject", "from_name", "from_email", "reply_to", "content_html", "content_text",
               "template_id", "status", "scheduled_at", "sent_at", "stats", "paused_reason", "created_at", "updated_at"}


def ready_payload(**extra):
    payload = {"name": "May news", "subject": "Hi {{ contact.first_name }}", "content_html": READY_HTML,
               "audience": {"all": True}}
    payload.update(extra)
    return payload


def with_address(account):
    account.postal_address = "1 Main Street, Springfield"
    db.session.commit()
    return account


def test_create_show_list_and_the_payload_shape(client, make_account, api_token):
    account, _ = make_account(name="Corner Shop")
    headers = bearer(api_token(account, "campaigns:write campaigns:read"))
    response = client.post("/api/v1/campaigns", json={"name": "First"}, headers=headers)
    assert response.status_code == 201, response.get_json()
    data = response.get_json()["data"]
    assert set(data) == SPEC_FIELDS | {"audience", "readiness"}
    assert (data["status"], data["from_name"], data["from_email"]) == ("draft", "Corner Shop", account.email)
    assert data["stats"] == {"recipients": 0, "sent": 0, "failed": 0, "delivered": 0, "opened": 0, "clicked": 0,
                             "unsubscribed": 0, "bounced": 0, "complained": 0}
    blocking = {item["code"] for item in data["readiness"] if item["blocking"]}
    assert {"subject_missing", "audience_empty", "content_missing"} <= blocking

    client.post("/api/v1/campaigns", json={"name": "Second"}, headers=headers)
    listing = client.get("/api/v1/campaigns?per_page=1", headers=headers).get_json()
    assert listing["meta"]["total"] == 2 and len(listing["data"]) == 1
    assert listing["data"][0]["name"] == "Second"
    assert "content_html" not in listing["data"][0] and "readiness" not in listing["data"][0]
    assert client.get("/api/v1/campaigns?status=sent", headers=headers).get_json()["meta"]["total"] == 0
    assert client.get("/api/v1/campaigns?status=nope", headers=headers).status_code == 400

    shown = client.get(f"/api/v1/campaigns/{data['id']}", headers=headers).get_json()["data"]
    assert shown["name"] == "First" and "readiness" in shown


def test_validation_errors_come_in_the_envelope(client, make_account, api_token):
    account, _ = make_account()
    headers = bearer(api_token(account, "campaigns:write"))
    response = client.post("/api/v1/campaigns", json={"name": "", "from_email": "nope", "status": "sent"},
                           headers=headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"][0]["field"] == "status"
    response = client.post("/api/v1/campaigns", json={"name": "", "from_email": "nope"}, headers=headers)
    assert {d["field"] for d in response.get_json()["error"]["details"]} == {"name", "from_email"}
    response = client.post("/api/v1/campaigns", json={"name": "X", "audience": {"segments": ["nope"]}},
                           headers=headers)
    assert response.get_json()["error"]["details"][0]["field"] == "audience.segments[0]"


def test_send_now_schedule_and_the_status_changes(client, make_account, api_token, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, _ = make_account()
    with_address(account)
    add_contacts(account, "a@x.example", "b@x.example")
    headers = bearer(api_token(account, "campaigns:write campaigns:read"))
    campaign_id = client.post("/api/v1/campaigns", json=ready_payload(), headers=headers).get_json()["data"]["id"]

    scheduled = client.post(f"/api/v1/campaigns/{campaign_id}/send", json={"scheduled_at": "2099-01-01T09:00"},
                            headers=headers)
    assert scheduled.status_code == 200, scheduled.get_json()
    assert scheduled.get_json()["data"]["status"] == "scheduled"
    assert scheduled.get_json()["data"]["scheduled_at"] == "2099-01-01T09:00:00Z"  # the account is on UTC
    assert client.put(f"/api/v1/campaigns/{campaign_id}", json={"name": "Edit"}, headers=headers).status_code == 409
    unscheduled = client.post(f"/api/v1/campaigns/{campaign_id}/unschedule", headers=headers)
    assert unscheduled.get_json()["data"]["status"] == "draft"

    sent = client.post(f"/api/v1/campaigns/{campaign_id}/send", headers=headers)  # no body: send now
    assert sent.status_code == 200 and sent.get_json()["data"]["status"] == "sending"
    assert pipeline.names() == ["start_send"]
    again = client.post(f"/api/v1/campaigns/{campaign_id}/send", headers=headers)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"

    for action, status in (("pause", "paused"), ("resume", "sending"), ("cancel", "cancelled")):
        response = client.post(f"/api/v1/campaigns/{campaign_id}/{action}", headers=headers)
        assert response.status_code == 200 and response.get_json()["data"]["status"] == status
    assert client.post(f"/api/v1/campaigns/{campaign_id}/pause", headers=headers).status_code == 409
    assert client.delete(f"/api/v1/campaigns/{campaign_id}", headers=headers).status_code == 409

    copy = client.post(f"/api/v1/campaigns/{campaign_id}/duplicate", headers=headers)
    assert copy.status_code == 201
    assert (copy.get_json()["data"]["status"], copy.get_json()["data"]["name"]) == ("draft", "May news (copy)")
    assert client.delete(f"/api/v1/campaigns/{copy.get_json()['data']['id']}", headers=headers).status_code == 204


def test_sending_is_refused_while_the_checklist_blocks_or_the_limit_is_reached(client, make_account, api_token,
                                                                               monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, _ = make_account()
    add_contacts(account, "a@x.example", "b@x.example")
    headers = bearer(api_token(account, "campaigns:write"))
    campaign_id = client.post("/api/v1/campaigns", json=ready_payload(), headers=headers).get_json()["data"]["id"]
    blocked = client.post(f"/api/v1/campaigns/{campaign_id}/send", json={}, headers=headers)
    assert blocked.status_code == 400
    assert blocked.get_json()["error"]["details"][0]["field"] == "account.postal_address"

    with_address(account)
    account.monthly_email_limit = 1
    db.session.commit()
    limited = client.post(f"/api/v1/campaigns/{campaign_id}/send", json={}, headers=headers)
    assert limited.status_code == 403
    assert limited.get_json()["error"]["code"] == "LIMIT_EXCEEDED"
    assert "0 of 1" in limited.get_json()["error"]["message"]
    assert pipeline.calls == []
    assert db.session.get(Campaign, uuid.UUID(campaign_id)).status == "draft"


def test_content_from_a_template_is_the_templates_latest_version(client, make_account, api_token, monkeypatch):
    fake_pipeline(monkeypatch)
    account, owner = make_account()
    with_address(account)
    add_contacts(account, "a@x.example")
    template = templates.create_template(owner, account.id, name="House style", format="html",
                                         content_source=READY_HTML)
    headers = bearer(api_token(account, "campaigns:write campaigns:read"))
    created = client.post("/api/v1/campaigns", json={"name": "T", "subject": "Hi", "template_id": str(template.id),
                                                     "audience": {"all": True}}, headers=headers).get_json()["data"]
    assert created["template_id"] == str(template.id) and "{{ unsubscribe_url }}" in created["content_html"]
    assert not [item for item in created["readiness"] if item["blocking"]]
    both = client.put(f"/api/v1/campaigns/{created['id']}", json={"content_html": READY_HTML,
                                                                  "template_id": str(template.id)}, headers=headers)
    assert both.status_code == 400
    null = client.post(f"/api/v1/campaigns/{created['id']}/send", json={"scheduled_at": None}, headers=headers)
    assert null.status_code == 400
    sent = client.post(f"/api/v1/campaigns/{created['id']}/send", json={}, headers=headers).get_json()["data"]
    templates.save_version(owner, account.id, template.id, content_source=READY_HTML.replace("Hello", "Bye"))
    shown = client.get(f"/api/v1/campaigns/{created['id']}", headers=headers).get_json()["data"]
    assert "Hello" in shown["content_html"] and sent["status"] == "sending"


def test_test_sends(client, make_account, api_token, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, _ = make_account()
    headers = bearer(api_token(account, "campaigns:write"))
    campaign_id = client.post("/api/v1/campaigns", json=ready_payload(), headers=headers).get_json()["data"]["id"]
    response = client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"emails": ["me@x.example"]},
                           headers=headers)
    assert response.status_code == 200
    assert response.get_json()["data"]["results"] == [{"email": "me@x.example", "status": "sent", "error": None}]
    too_many = client.post(f"/api/v1/campaigns/{campaign_id}/test",
                           json={"emails": [f"t{i}@x.example" for i in range(6)]}, headers=headers)
    assert too_many.status_code == 400 and too_many.get_json()["error"]["details"][0]["field"] == "emails"
    assert client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"emails": "me@x.example"},
                       headers=headers).status_code == 400
    assert len(pipeline.calls) == 1


def test_audience_count(client, make_account, api_token):
    account, owner = make_account()
    add_contacts(account, "a@x.example", tags=["vip"])
    add_contacts(account, "b@x.example")
    add_contacts(account, "c@x.example", status="unsubscribed", tags=["vip"])
    vips = segments.create_segment(owner, "VIP", "dynamic", {"match": "all", "conditions": [
        {"field": "tags", "op": "contains_any", "value": ["vip"]}]})
    headers = bearer(api_token(account, "campaigns:read"))
    count = client.post("/api/v1/campaigns/audience/count", json={"audience": {"all": True}}, headers=headers)
    assert count.get_json()["data"] == {"count": 2}
    count = client.post("/api/v1/campaigns/audience/count", json={"audience": {"segments": [str(vips.id)]}},
                        headers=headers)
    assert count.get_json()["data"] == {"count": 1}


def test_scopes_and_tenant_isolation(client, make_account, api_token):
    account, _ = make_account()
    other, _ = make_account()
    writer = bearer(api_token(account, "campaigns:write"))
    reader = bearer(api_token(account, "campaigns:read"))
    contacts_only = bearer(api_token(account, "contacts:read"))
    stranger = bearer(api_token(other, "account:admin"))
    campaign_id = client.post("/api/v1/campaigns", json={"name": "Mine"}, headers=writer).get_json()["data"]["id"]

    assert client.get(f"/api/v1/campaigns/{campaign_id}", headers=reader).status_code == 200
    denied = client.put(f"/api/v1/campaigns/{campaign_id}", json={"name": "No"}, headers=reader)
    assert denied.status_code == 403 and "campaigns:write" in denied.get_json()["error"]["message"]
    assert client.get("/api/v1/campaigns", headers=contacts_only).status_code == 403
    assert client.get(f"/api/v1/campaigns/{campaign_id}", headers=stranger).status_code == 404
    assert client.post(f"/api/v1/campaigns/{campaign_id}/send", headers=stranger).status_code == 404
    assert client.get("/api/v1/campaigns", headers=stranger).get_json()["meta"]["total"] == 0
    assert db.session.scalar(sa.select(Campaign.name).where(Campaign.id == uuid.UUID(campaign_id))) == "Mine"


def test_the_openapi_document_describes_the_resource(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/campaigns"])
    assert {"get", "put", "delete"} <= set(paths["/api/v1/campaigns/{campaign_id}"])
    for action in ("send", "test", "pause", "resume", "cancel", "duplicate", "unschedule"):
        assert "post" in paths[f"/api/v1/campaigns/{{campaign_id}}/{action}"]


def test_send_schedule_and_test_refuse_an_unknown_merge_tag_naming_it(client, make_account, api_token, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account = with_address(make_account()[0])
    add_contacts(account, "a@x.example")
    headers = bearer(api_token(account, "campaigns:write campaigns:read"))
    created = client.post("/api/v1/campaigns", json=ready_payload(subject="{{ contact.firstname }}, hello"),
                          headers=headers).get_json()["data"]
    assert {"code": "merge_tag_unknown", "blocking": True, "field": "subject",
            "message": "The subject: {{ contact.firstname }} is not a merge tag and would be blank: did you mean "
                       "contact.first_name?"} in created["readiness"]
    for path, body in (("send", {}), ("send", {"scheduled_at": "2099-01-01T09:00:00Z"}),
                       ("test", {"emails": ["me@x.example"]})):
        response = client.post(f"/api/v1/campaigns/{created['id']}/{path}", json=body, headers=headers)
        assert response.status_code == 400, path
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert {"field": "subject", "issue": "The subject: {{ contact.firstname }} is not a merge tag and would be "
                                             "blank: did you mean contact.first_name?"} in error["details"]
    assert pipeline.calls == []
    fixed = client.put(f"/api/v1/campaigns/{created['id']}", json={"subject": "{{ contact.first_name }}, hello"},
                       headers=headers)
    assert fixed.status_code == 200
    assert client.post(f"/api/v1/campaigns/{created['id']}/test", json={"emails": ["me@x.example"]},
                       headers=headers).status_code == 200


def test_a_subject_with_a_syntax_error_is_refused_in_plain_words(client, make_account, api_token):
    account = make_account()[0]
    headers = bearer(api_token(account, "campaigns:write"))
    response = client.post("/api/v1/campaigns", json=ready_payload(subject="Hi {{ contact.first_name"),
                           headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == [{"field": "subject",
                                                        "issue": "Line 1: a merge tag is not closed: add }}."}]
