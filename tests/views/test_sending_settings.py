"""Settings → Sending: the provider form, thresholds, the test email, and who may see it."""
import asyncio
import re

import dkim
import pytest
from aiosmtpd.controller import Controller
from flask import g

from nudge.extensions import db
from nudge.services import sending_domains
from nudge.services import sending_settings as service
from tests.conftest import PASSWORD, totp_code
from tests.delivery.conftest import RecordingHandler, free_port
from tests.services.test_sending_settings import lan_relay

HTMX = {"HX-Request": "true"}
PAGE = "/settings/sending/"
SMTP = {"provider": "smtp", "smtp_host": "93.184.215.14", "smtp_port": "", "smtp_tls": "starttls",
        "smtp_username": "mailer", "smtp_password": "Pa55-word-never-shown"}


@pytest.fixture
def owner_client(client, make_account, login):
    account, owner = make_account(email="owner@shop.example")
    login(client, owner)
    client.account, client.user = account, owner
    return client


@pytest.fixture
def relay(app):
    handler = RecordingHandler()
    port = free_port()
    lan_relay(app.config, port)
    controller = Controller(handler, hostname="127.0.0.1", port=port, loop=asyncio.new_event_loop())
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


def test_page_shows_the_servers_providers_and_the_sections(make_app, make_account, login, tmp_path):
    app = make_app(SMTP_URL="smtp://relayuser:hunter2@mail.example.com:2525", OUTBOX_DIR=str(tmp_path))
    client = app.test_client()
    account, owner = make_account()
    login(client, owner)
    html = client.get(PAGE).get_data(as_text=True)
    assert "mail.example.com:2525" in html and "hunter2" not in html and "relayuser" not in html
    assert 'href="/settings/sending/"' in html and 'aria-current="page">Sending' in html
    for section in ("sending-domains", "sending-provider", "sending-test", "sending-pause"):
        assert f'id="{section}"' in html
    assert 'placeholder="10"' in html and 'placeholder="20"' in html      # the default thresholds
    assert "Send a test email to me" in html


def test_saving_smtp_never_renders_the_password_back(owner_client):
    response = owner_client.post(PAGE + "provider", data=SMTP, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html and 'id="sending-provider"' in html
    assert "Sending provider saved" in response.headers["HX-Trigger"]
    assert 'value="93.184.215.14"' in html and 'value="587"' in html
    assert "Pa55-word" not in html and "Saved — leave blank to keep it" in html
    page = owner_client.get(PAGE).get_data(as_text=True)
    assert "Pa55-word" not in page
    assert re.search(r'<input id="smtp_password" name="smtp_password" type="password" maxlength="1000" value=""', page)


def test_plain_form_post_redirects_with_a_flash(owner_client):
    response = owner_client.post(PAGE + "provider", data=SMTP)
    assert response.status_code == 303
    assert "Sending provider saved" in owner_client.get(response.headers["Location"]).get_data(as_text=True)


def test_invalid_smtp_settings_come_back_with_errors_next_to_the_fields(owner_client):
    response = owner_client.post(PAGE + "provider", headers=HTMX, data={
        **SMTP, "smtp_host": "not a host", "smtp_port": "70000", "smtp_password": "typed-secret-here"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "<html" not in html
    assert 'id="smtp_host-error"' in html and 'id="smtp_port-error"' in html
    assert 'value="not a host"' in html                   # what was typed stays
    assert "typed-secret-here" not in html                # except the secret
    assert service.get_settings(owner_client.account.id).provider is None


def test_choosing_a_provider_swaps_in_its_fields(owner_client):
    html = owner_client.get(PAGE + "provider-fields?provider=ses", headers=HTMX).get_data(as_text=True)
    assert 'id="provider-fields"' in html and 'name="ses_region"' in html and 'name="smtp_host"' not in html
    html = owner_client.get(PAGE + "provider-fields?provider=sendgrid", headers=HTMX).get_data(as_text=True)
    assert 'name="sendgrid_api_key"' in html and "starts with SG." in html


def test_pause_thresholds_save_and_reject_out_of_range(owner_client):
    response = owner_client.post(PAGE + "pause", headers=HTMX, data={"pause_bounce_rate": "4.5",
                                                                     "pause_failure_rate": ""})
    assert response.status_code == 200 and 'value="4.5"' in response.get_data(as_text=True)
    settings = service.get_settings(owner_client.account.id)
    assert (settings.pause_bounce_rate, settings.pause_failure_rate) == (0.045, None)
    response = owner_client.post(PAGE + "pause", headers=HTMX, data={"pause_bounce_rate": "0",
                                                                     "pause_failure_rate": "101"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'id="pause_bounce_rate-error"' in html and 'id="pause_failure_rate-error"' in html


def test_test_email_goes_through_the_accounts_relay_and_shows_the_result(owner_client, relay):
    owner_client.post(PAGE + "provider", data={"provider": "smtp", "smtp_host": "127.0.0.1",
                                               "smtp_port": str(relay.port), "smtp_tls": "none"})
    owner_client.post(PAGE + "domains", data={"domain": "shop.example"})
    response = owner_client.post(PAGE + "test", headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="sending-test"' in html and "<html" not in html
    assert "Sent to owner@shop.example through" in html and "account-smtp" in html and "signed with your domain’s DKIM key" in html
    assert [m.rcpt_tos for m in relay.messages] == [["owner@shop.example"]]
    domain = sending_domains.list_domains(owner_client.user)[0]
    name, value = sending_domains.dkim_record(domain)
    assert dkim.verify(relay.messages[0].content,
                       dnsfunc=lambda q, timeout=5: value.encode() if q.decode().rstrip(".") == name else b"")


def test_a_failed_test_email_says_why(make_app, make_account, login, tmp_path):
    # The server has only an SMTP relay that is down, and so is the account's: nothing can take the email.
    app = make_app(SMTP_URL=f"smtp://127.0.0.1:{free_port()}")
    client = app.test_client()
    account, owner = make_account()
    login(client, owner)
    port = free_port()
    lan_relay(app.config, port)
    client.post(PAGE + "provider", data={"provider": "smtp", "smtp_host": "127.0.0.1",
                                         "smtp_port": str(port), "smtp_tls": "none"})
    html = client.post(PAGE + "test", headers=HTMX).get_data(as_text=True)
    assert "Not sent (no provider could take it right now)" in html
    assert "account-smtp: cannot connect to 127.0.0.1" in html and "smtp: cannot connect" in html


def test_a_test_email_that_fell_back_to_the_server_says_so(app, owner_client, tmp_path):
    port = free_port()
    lan_relay(app.config, port)
    owner_client.post(PAGE + "provider", data={"provider": "smtp", "smtp_host": "127.0.0.1",
                                               "smtp_port": str(port), "smtp_tls": "none"})
    html = owner_client.post(PAGE + "test", headers=HTMX).get_data(as_text=True)
    assert 'class="flash flash-warning"' in html and "through <code class=\"mono\">outbox</code>" in html
    assert "Your own provider, <code class=\"mono\">account-smtp</code>, could not take it right now" in html


@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_marketers_and_viewers_get_403(client, make_account, make_user, login, role):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    login(client, make_user(account, role=role))
    assert client.get(PAGE).status_code == 403
    assert client.get(PAGE + "provider-fields?provider=smtp").status_code == 403
    for path, data in (("provider", {**SMTP, "smtp_host": "evil.example"}), ("domains", {"domain": "x.example"}),
                       ("pause", {"pause_bounce_rate": "50"}), ("test", {})):
        assert client.post(PAGE + path, data=data).status_code == 403
    assert 'href="/settings/sending/"' not in client.get("/settings/account").get_data(as_text=True)
    assert service.get_settings(account.id).pause_bounce_rate is None
    assert "93.184.215.14" in str(service.describe(service.get_settings(account.id)))


def test_an_admin_may_and_another_account_sees_only_its_own(client, make_account, make_user, login):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    login(client, make_user(account, role="admin"))
    assert "93.184.215.14" in client.get(PAGE).get_data(as_text=True)

    other_client = client.application.test_client()
    other, other_owner = make_account()
    login(other_client, other_owner)
    html = other_client.get(PAGE).get_data(as_text=True)
    assert "93.184.215.14" not in html
    other_client.post(PAGE + "provider", data={**SMTP, "smtp_host": "93.184.216.34"})
    db.session.expire_all()
    assert service.describe(service.get_settings(account.id))["fields"]["smtp_host"] == "93.184.215.14"
    assert service.describe(service.get_settings(other.id))["fields"]["smtp_host"] == "93.184.216.34"


def test_forms_need_the_csrf_token(make_app, make_account, login):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    account, owner = make_account()
    login_page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
    client.post("/login", data={"email": owner.email, "password": PASSWORD, "csrf_token": token})
    client.post("/login/mfa", data={"code": totp_code(owner), "csrf_token": token})
    # Requests here share the test's app context, so g keeps the token of the session that sign-in replaced.
    g.pop("csrf_token", None)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert client.post(PAGE + "provider", data=SMTP).status_code == 400
    assert service.get_settings(account.id).provider is None
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    assert client.post(PAGE + "provider", data={**SMTP, "csrf_token": token}).status_code == 303
    assert service.get_settings(account.id).provider == "smtp"


def test_a_private_relay_or_another_port_comes_back_with_a_clear_error(owner_client):
    response = owner_client.post(PAGE + "provider", headers=HTMX, data={**SMTP, "smtp_host": "169.254.169.254",
                                                                         "smtp_port": "8025"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert re.search(r'id="smtp_port-error">Port 8025 is not allowed for an SMTP relay \(use 25, 465, 587 or '
                     r'2525\)\.<', html)
    assert service.get_settings(owner_client.account.id).provider is None
    response = owner_client.post(PAGE + "provider", headers=HTMX, data={**SMTP, "smtp_host": "169.254.169.254"})
    assert ('id="smtp_host-error">This is a link-local address: your relay must be reachable on the public '
            'internet.<') in response.get_data(as_text=True)
    assert "25, 465, 587, 2525 are allowed" in owner_client.get(PAGE + "provider-fields?provider=smtp").get_data(
        as_text=True)


def test_changing_the_relay_without_typing_the_password_again_is_refused(owner_client):
    owner_client.post(PAGE + "provider", data=SMTP)
    page = owner_client.get(PAGE).get_data(as_text=True)
    assert "Type it again when you change the host, port, encryption or user name." in page
    response = owner_client.post(PAGE + "provider", headers=HTMX,
                                 data={**SMTP, "smtp_host": "93.184.216.34", "smtp_password": ""})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert f'id="smtp_password-error">{service.PASSWORD_AGAIN}<' in html
    assert service.describe(service.get_settings(owner_client.account.id))["fields"]["smtp_host"] == SMTP["smtp_host"]
