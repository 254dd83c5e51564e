"""Settings → Sending: sending domains (add, records to publish, Check now, remove), single senders and their
confirmation page, who may manage them; the review checklist and the test form when the From is not
verified or the hourly test cap is reached."""
import pytest

from nudge.models import SendingDomain
from nudge.extensions import db
from nudge.services import sending_domains
from tests.campaign_helpers import add_contacts, fake_pipeline, ready_campaign

HTMX = {"HX-Request": "true"}
PAGE = "/settings/sending/"


@pytest.fixture
def app(dns_app, tmp_path):
    return dns_app(OUTBOX_DIR=str(tmp_path / "outbox"))


@pytest.fixture
def owner_client(app, make_account, login):
    account, owner = make_account(email="owner@shop.example")
    client = app.test_client()
    login(client, owner)
    client.account, client.user = account, owner
    return client


def text(response):
    return response.get_data(as_text=True)


def test_adding_a_domain_shows_the_records_to_publish_and_check_now_verifies_it(owner_client, dns_zone):
    html = text(owner_client.get(PAGE))
    assert 'id="sending-domains"' in html and "No sending domain yet" in html
    assert "optional on this server" in html
    response = owner_client.post(PAGE + "domains", data={"domain": "shop.example"}, headers=HTMX)
    html = text(response)
    assert response.status_code == 200 and "<html" not in html and 'id="sending-domains"' in html
    assert "shop.example added" in response.headers["HX-Trigger"]
    row = sending_domains.list_domains(owner_client.user)[0]
    name, value = sending_domains.dkim_record(row)
    assert f"nudge-verify={row.verify_token}" in html and value in html and name in html
    assert "Not verified" in html and "Not checked yet." in html
    key_body = sending_domains._decrypt_text(row.dkim_key_encrypted).splitlines()[5]
    assert key_body not in html and key_body not in text(owner_client.get(PAGE))

    dns_zone.publish("shop.example", f"nudge-verify={row.verify_token}")
    response = owner_client.post(PAGE + f"domains/{row.id}/check", headers=HTMX)
    html = text(response)
    assert response.status_code == 200 and html.lstrip().startswith(f'<article class="card domain" id="domain-{row.id}"')
    assert 'badge badge-success">Verified' in html and "is verified" in response.headers["HX-Trigger"]
    assert "The ownership record is published." in html and "No SPF record" in html
    assert "v=spf1 mx ~all" in html and "v=DMARC1; p=none; rua=mailto:dmarc@shop.example" in html


def test_a_bad_domain_comes_back_with_the_error_next_to_the_field(owner_client):
    response = owner_client.post(PAGE + "domains", data={"domain": "not a domain"}, headers=HTMX)
    html = text(response)
    assert response.status_code == 422 and 'id="domain-error"' in html and 'value="not a domain"' in html
    assert db.session.query(SendingDomain).count() == 0


def test_removing_a_domain_and_a_plain_form_post(owner_client):
    response = owner_client.post(PAGE + "domains", data={"domain": "shop.example"})
    assert response.status_code == 303 and response.headers["Location"].endswith("#sending-domains")
    row = sending_domains.list_domains(owner_client.user)[0]
    response = owner_client.post(PAGE + f"domains/{row.id}/delete", headers=HTMX)
    assert response.status_code == 200 and "No sending domain yet" in text(response)


def test_a_domain_key_can_be_replaced_and_a_bad_one_is_refused(owner_client):
    owner_client.post(PAGE + "domains", data={"domain": "shop.example"})
    row = sending_domains.list_domains(owner_client.user)[0]
    response = owner_client.post(PAGE + f"domains/{row.id}/key", data={"dkim_private_key": "-----BEGIN nonsense"},
                                 headers=HTMX)
    assert response.status_code == 422 and "not a PEM private key" in text(response)
    old = sending_domains.dkim_record(row)[1]
    response = owner_client.post(PAGE + f"domains/{row.id}/key", data={"dkim_key_action": "generate",
                                                                         "dkim_selector": "s2"}, headers=HTMX)
    db.session.refresh(row)
    assert response.status_code == 200 and row.dkim_selector == "s2" and sending_domains.dkim_record(row)[1] != old


def test_a_single_sender_is_confirmed_on_a_page_that_needs_no_sign_in(owner_client, app):
    response = owner_client.post(PAGE + "senders", data={"email": "boss@gmail.com"}, headers=HTMX)
    assert response.status_code == 200 and "Waiting for confirmation" in text(response)
    sender = sending_domains.list_senders(owner_client.user)[0]
    link = sending_domains.confirm_link(sender)
    stranger = app.test_client()
    path = link.replace(app.config["BASE_URL"], "")
    page = stranger.get(path)
    assert page.status_code == 200 and "Confirm boss@gmail.com" in text(page)
    db.session.refresh(sender)
    assert not sender.verified          # a mail scanner following the link confirms nothing
    done = stranger.post(path)
    assert done.status_code == 200 and "is confirmed" in text(done)
    db.session.refresh(sender)
    assert sender.verified
    assert stranger.get(PAGE + "senders/confirm/forged-token").status_code == 400
    assert 'badge badge-success">Verified' in text(owner_client.get(PAGE))


@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_marketers_and_viewers_cannot_manage_domains(app, make_account, make_user, login, role):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    client = app.test_client()
    login(client, make_user(account, role=role))
    assert client.get(PAGE).status_code == 403
    for path, data in (("domains", {"domain": "x.example"}), (f"domains/{row.id}/check", {}),
                       (f"domains/{row.id}/delete", {}), (f"domains/{row.id}/key", {"dkim_key_action": "generate"}),
                       ("senders", {"email": "a@gmail.com"})):
        assert client.post(PAGE + path, data=data).status_code == 403
    assert len(sending_domains.list_domains(owner)) == 1


def test_the_review_checklist_blocks_an_unverified_from_when_required(owner_client, app, monkeypatch):
    fake_pipeline(monkeypatch)
    account, owner = owner_client.account, owner_client.user
    add_contacts(account, "ann@example.org")
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    html = text(owner_client.get(f"/campaigns/{campaign.id}/review"))
    assert "news@shop.example is not verified" in html and "badge badge-warning\">Check" in html
    assert "Open Settings → Sending" in html

    app.config["REQUIRE_VERIFIED_DOMAINS"] = True
    html = text(owner_client.get(f"/campaigns/{campaign.id}/review"))
    assert "Fix this before sending" in html and "news@shop.example is not a verified sender" in html
    assert "Verify it in Settings → Sending" in html
    response = owner_client.post(f"/campaigns/{campaign.id}/test", data={"emails": "me@example.org"}, headers=HTMX)
    assert response.status_code == 422 and "not a verified sender" in text(response)
    assert "from address must be verified" in text(owner_client.get(PAGE))


def test_the_hourly_test_cap_is_a_readable_message_in_the_dashboard(owner_client, app, monkeypatch):
    app.config["TEST_SENDS_PER_HOUR"] = 2
    fake_pipeline(monkeypatch)
    account, owner = owner_client.account, owner_client.user
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    ok = owner_client.post(f"/campaigns/{campaign.id}/test", data={"emails": "a@example.org, b@example.org"},
                           headers=HTMX)
    assert ok.status_code == 200
    refused = owner_client.post(f"/campaigns/{campaign.id}/test", data={"emails": "c@example.org"}, headers=HTMX)
    assert refused.status_code == 422 and 'id="campaign-test-error"' in text(refused)
    assert "You can send 2 test emails an hour and have used them up. Try again in about 60 minutes." in text(refused)
    refused = owner_client.post(PAGE + "test", headers=HTMX)
    assert refused.status_code == 422 and "Not sent: You can send 2 test emails an hour" in text(refused)
