"""An account's sending settings: encrypted credentials, validation, thresholds, and the provider chain the
pipeline gets from them — with real sends to aiosmtpd and local API servers."""
import asyncio
import json
import os
import threading
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dkim
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from nudge.delivery import FailoverSender
from nudge.delivery.message import OutgoingMessage, compose_message, new_message_id
from nudge.delivery.outbox import OutboxProvider
from nudge.delivery.smtp import ACCOUNT_SMTP_PORTS, SMTPProvider
from nudge.errors import Forbidden, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import AuditLog, SendingConfig
from nudge.services import sending_domains
from nudge.services import sending_settings as service
from tests.delivery.conftest import PASSWORD as SMTP_PASSWORD
from tests.delivery.conftest import USERNAME as SMTP_USERNAME
from tests.delivery.conftest import RecordingHandler, _authenticator, free_port

# A public address (example.com's) rather than a name: a name would be looked up in DNS, which tests never use.
SMTP = {"provider": "smtp", "smtp_host": "93.184.215.14", "smtp_port": "587", "smtp_tls": "starttls",
        "smtp_username": "mailer@shop.example", "smtp_password": "Sup3r-Secret:pw/%"}
SES = {"provider": "ses", "ses_region": "eu-west-1", "ses_access_key_id": "AKIAACCOUNTKEY000001",
       "ses_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYACCOUNTKEY"}
SENDGRID_KEY = "SG.accountkey123.abcdefghijklmnopqrstuvwxyz0123456789"


def issues(exc_info):
    """{field: issue} of a raised ValidationError."""
    return {d["field"]: d["issue"] for d in exc_info.value.details}


def stored_row(account_id):
    """The sending_configs row as the database holds it (raw columns, not through the model)."""
    db.session.expire_all()
    return db.session.execute(sa.text("SELECT * FROM sending_configs")).mappings().one()


def dns_for(name, value):
    """dkimpy's dnsfunc answering one TXT record."""
    return lambda query, timeout=5: value.encode() if query.decode().rstrip(".") == name else b""


def lan_relay(config, port):
    """Let account relays use a loopback address and this port, as ACCOUNT_SMTP_ALLOW_PRIVATE does for a relay
    on the operator's LAN (the tests' aiosmtpd listens on 127.0.0.1, on a free port). Returns config."""
    config["ACCOUNT_SMTP_ALLOW_PRIVATE"] = True
    config["ACCOUNT_SMTP_PORTS"] = (*ACCOUNT_SMTP_PORTS, port)
    return config


@pytest.fixture
def smtp_relay(app):
    """A real SMTP server on loopback (aiosmtpd) that asks for AUTH over a plain connection; .messages.
    The app lets account relays use it (lan_relay)."""
    servers = []

    def start(auth=True):
        handler = RecordingHandler()
        port = free_port()
        lan_relay(app.config, port)
        options = {"authenticator": _authenticator, "auth_require_tls": False} if auth else {}
        controller = Controller(handler, hostname="127.0.0.1", port=port, loop=asyncio.new_event_loop(), **options)
        controller.start()
        servers.append(controller)
        handler.port = port
        return handler

    yield start
    for controller in servers:
        controller.stop()


def relay_settings(port, **extra):
    return {"provider": "smtp", "smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_tls": "none",
            "smtp_username": SMTP_USERNAME, "smtp_password": SMTP_PASSWORD, **extra}


# --- Secrets ---------------------------------------------------------------------------------------

def test_smtp_credentials_are_encrypted_at_rest_and_never_described(make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    row = stored_row(account.id)
    assert row["provider"] == "smtp"
    for secret in ("Sup3r-Secret", "mailer@shop.example", "93.184.215.14"):
        assert secret not in row["credentials_encrypted"]
    described = service.describe(service.get_settings(account.id))
    assert "Sup3r-Secret" not in json.dumps(described, default=str)
    assert described["fields"]["smtp_host"] == "93.184.215.14"
    assert described["fields"]["smtp_username"] == "mailer@shop.example"
    assert "smtp_password" not in described["fields"] and described["saved_secrets"] == {"smtp_password"}


def test_a_blank_secret_keeps_the_saved_one(make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    service.update_settings(owner, account.id, {**SMTP, "smtp_password": ""})
    names, factory = service.account_providers(account.id, "test", 1, {"INSTANCE_PATH": "/tmp"})
    provider = factory("account-smtp")
    assert (provider.settings.port, provider.settings.password) == (587, "Sup3r-Secret:pw/%")

    service.update_settings(owner, account.id, {"provider": "sendgrid", "sendgrid_api_key": SENDGRID_KEY})
    service.update_settings(owner, account.id, {"provider": "sendgrid", "sendgrid_api_key": ""})
    names, factory = service.account_providers(account.id, "test", 1, {"INSTANCE_PATH": "/tmp"})
    assert factory("account-sendgrid").api_key == SENDGRID_KEY
    # Switching back to SMTP: the old password went with the old provider, so it must be typed again.
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {**SMTP, "smtp_password": ""})
    assert issues(exc) == {"smtp_password": "Enter the password."}


def test_a_new_ses_access_key_needs_its_secret(make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, SES)
    service.update_settings(owner, account.id, {**SES, "ses_region": "us-east-1", "ses_secret_access_key": ""})
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {**SES, "ses_access_key_id": "AKIANEWKEY0000000002",
                                                    "ses_secret_access_key": ""})
    assert set(issues(exc)) == {"ses_secret_access_key"}
    assert "AKIAACCOUNTKEY000001" not in stored_row(account.id)["credentials_encrypted"]
    assert service.describe(service.get_settings(account.id))["fields"]["ses_region"] == "us-east-1"


def test_credentials_the_servers_keys_no_longer_open_fall_back_to_the_server(app, make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    domain = sending_domains.add_domain(owner, "shop.example")
    app.config["ENCRYPTION_KEYS"] = [os.urandom(32)]     # NUDGE_ENCRYPTION_KEYS replaced without the old key
    described = service.describe(service.get_settings(account.id))
    assert described["credentials_unreadable"] and sending_domains.describe_domain(domain)["dkim_key_unreadable"]
    assert service.account_providers(account.id, "test", 1, {"INSTANCE_PATH": "/tmp"})[0] == ["outbox"]
    assert sending_domains.dkim_for(account.id, "news@shop.example") is None


# --- Validation ------------------------------------------------------------------------------------

def test_invalid_smtp_settings_are_rejected_field_by_field(make_account):
    account, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {"provider": "smtp", "smtp_host": "bad host!", "smtp_port": "99999",
                                                    "smtp_tls": "tls1.0", "smtp_username": "u", "smtp_password": ""})
    assert set(issues(exc)) == {"smtp_host", "smtp_port", "smtp_tls", "smtp_password"}
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {"provider": "pigeon"})
    assert set(issues(exc)) == {"provider"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SendingConfig)) == 0


def test_smtp_defaults_port_by_encryption_and_accepts_relays_without_sign_in(app, make_account):
    account, owner = make_account()
    app.config["ACCOUNT_SMTP_ALLOW_PRIVATE"] = True       # "localhost" resolves without DNS
    service.update_settings(owner, account.id, {"provider": "smtp", "smtp_host": "LocalHost.", "smtp_tls": "ssl"})
    settings = service.smtp_settings(service._decrypt_json(service.get_settings(account.id).credentials_encrypted))
    assert (settings.host, settings.port, settings.tls, settings.username) == ("localhost", 465, "ssl", None)


def test_invalid_ses_and_sendgrid_credentials_are_rejected(make_account):
    account, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {"provider": "ses", "ses_region": "Europe", "ses_access_key_id": "x",
                                                    "ses_secret_access_key": "short"})
    assert set(issues(exc)) == {"ses_region", "ses_access_key_id", "ses_secret_access_key"}
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {"provider": "sendgrid", "sendgrid_api_key": "not-a-key"})
    assert "SG." in issues(exc)["sendgrid_api_key"]


# --- Thresholds ------------------------------------------------------------------------------------

def test_pause_thresholds_are_percentages_stored_as_fractions(make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, {"pause_bounce_rate": "5", "pause_failure_rate": "12.5 %"})
    row = stored_row(account.id)
    assert (row["pause_bounce_rate"], row["pause_failure_rate"]) == (0.05, 0.125)
    assert service.describe(service.get_settings(account.id))["fields"]["pause_failure_rate"] == "12.5"
    service.update_settings(owner, account.id, {"pause_bounce_rate": "", "pause_failure_rate": "12.5"})
    assert stored_row(account.id)["pause_bounce_rate"] is None       # blank: the default again
    for bad in ("0", "150", "abc", "nan"):
        with pytest.raises(ValidationError) as exc:
            service.update_settings(owner, account.id, {"pause_bounce_rate": bad})
        assert set(issues(exc)) == {"pause_bounce_rate"}


def test_sections_left_out_are_not_touched(make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    service.update_settings(owner, account.id, {"pause_bounce_rate": "3"})
    assert service.get_settings(account.id).provider == "smtp"
    with pytest.raises(ValidationError):
        service.update_settings(owner, account.id, {"password": "x"})


# --- Access and audit ------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_only_owners_and_admins_change_sending_settings(make_account, make_user, role):
    account, _ = make_account()
    with pytest.raises(Forbidden):
        service.update_settings(make_user(account, role=role), account.id, SMTP)
    service.update_settings(make_user(account, role="admin"), account.id, SMTP)
    assert service.get_settings(account.id).provider == "smtp"


def test_another_account_cannot_change_or_use_them(make_account):
    account, owner = make_account()
    other, other_owner = make_account()
    with pytest.raises(NotFound):
        service.update_settings(other_owner, account.id, SMTP)
    service.update_settings(owner, account.id, SMTP)
    assert service.get_settings(other.id).provider is None
    assert service.account_providers(other.id, "test", 1, {"INSTANCE_PATH": "/tmp"})[0] == ["outbox"]


def test_changes_are_audited_without_secrets(make_account):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP, ip="203.0.113.9")
    service.update_settings(owner, account.id, {**SMTP, "smtp_password": ""})     # nothing changed: no entry
    entries = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "sending.updated")
                                 .order_by(AuditLog.created_at)).all()
    assert len(entries) == 1
    assert entries[0].meta["provider"] == {"provider": "smtp", "fields": [
        "smtp_host", "smtp_port", "smtp_tls", "smtp_username", "smtp_password"]}
    assert entries[0].ip_address == "203.0.113.9"
    text = json.dumps([e.meta for e in entries])
    assert "Sup3r-Secret" not in text and "PRIVATE" not in text and "mailer@shop.example" not in text


# --- The pipeline's provider chain -----------------------------------------------------------------

def test_account_provider_comes_first_then_the_server_chain(make_account, tmp_path):
    account, owner = make_account()
    config = {"INSTANCE_PATH": str(tmp_path), "SMTP_URL": "smtp://server-relay.example:25", "OUTBOX_DIR": str(tmp_path)}
    assert service.account_providers(account.id, "test", 1, config)[0] == ["smtp", "outbox"]
    service.update_settings(owner, account.id, SMTP)
    names, factory = service.account_providers(account.id, "marketing", 5000, config)
    assert names == ["account-smtp", "smtp", "outbox"]
    own, server = factory("account-smtp"), factory("smtp")
    assert isinstance(own, SMTPProvider) and own.name == "account-smtp"
    assert own.settings.host == "93.184.215.14" and own.settings.username == "mailer@shop.example"
    assert server.name == "smtp" and server.settings.host == "server-relay.example"
    assert isinstance(factory("outbox"), OutboxProvider)
    assert "Sup3r" not in repr(own)


def test_a_send_through_the_account_smtp_provider_reaches_the_relay(make_account, smtp_relay, tmp_path):
    relay = smtp_relay(auth=True)
    account, owner = make_account()
    service.update_settings(owner, account.id, relay_settings(relay.port))
    names, factory = service.account_providers(account.id, "marketing", 10,
                                               lan_relay({"INSTANCE_PATH": str(tmp_path)}, relay.port))
    message = OutgoingMessage(from_email="news@shop.example", to_email="ann@example.org", subject="Spring sale",
                              html="<p>Hi Ann</p>", text="Hi Ann", message_id=new_message_id("shop.example"))
    sender = FailoverSender(names, factory)
    try:
        result = sender.send(message, compose_message(message))
    finally:
        sender.close()
    assert (result.status, result.provider) == ("sent", "account-smtp"), result.error
    assert [m.rcpt_tos for m in relay.messages] == [["ann@example.org"]]
    assert b"Subject: Spring sale" in relay.messages[0].content


def test_when_the_account_relay_is_down_the_server_chain_takes_over(app, make_account, tmp_path):
    account, owner = make_account()
    port = free_port()
    lan_relay(app.config, port)
    service.update_settings(owner, account.id, relay_settings(port))
    names, factory = service.account_providers(account.id, "test", 1, lan_relay({"INSTANCE_PATH": str(tmp_path)}, port))
    message = OutgoingMessage(from_email="news@shop.example", to_email="ann@example.org", subject="Hi",
                              html="<p>Hi</p>", text="Hi", message_id=new_message_id("shop.example"),
                              account_id=str(account.id))
    result = FailoverSender(names, factory).send(message, compose_message(message))
    assert (result.status, result.provider) == ("sent", "outbox")
    assert len(list((tmp_path / "outbox" / str(account.id)).glob("*.eml"))) == 1


def test_the_test_email_goes_to_the_member_through_the_account_relay_signed(app, make_account, smtp_relay):
    relay = smtp_relay(auth=True)
    account, owner = make_account(email="owner@shop.example")
    service.update_settings(owner, account.id, relay_settings(relay.port))
    domain = sending_domains.add_domain(owner, "shop.example")
    result = service.send_test_email(owner, account.id)
    assert result["status"] == "sent" and result["provider"] == "account-smtp" and result["signed"], result
    received = relay.messages[0]
    assert received.rcpt_tos == ["owner@shop.example"]
    parsed = BytesParser(policy=policy.default).parsebytes(received.content)
    assert parsed["From"].addresses[0].addr_spec == "owner@shop.example"
    name, value = sending_domains.dkim_record(domain)
    assert dkim.verify(received.content, dnsfunc=dns_for(name, value))


# --- SES and SendGrid with the account's own credentials ----------------------------------------------

class Capture(BaseHTTPRequestHandler):
    """Answers SESv2 SendEmail and SendGrid mail/send like the real APIs; keeps each request's headers."""
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, dict(self.headers), body))
        if self.path.startswith("/v2/email/outbound-emails"):
            payload = json.dumps({"MessageId": "ses-0001"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            payload = b""
            self.send_response(202)
            self.send_header("X-Message-Id", "sg-0001")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_server():
    Capture.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_account_ses_and_sendgrid_use_the_accounts_keys_not_the_servers(make_account, api_server, monkeypatch,
                                                                        tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASERVERKEY0000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-secret-server-secret-server-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    config = {"INSTANCE_PATH": str(tmp_path), "SES_ENDPOINT_URL": api_server, "SENDGRID_API_URL": api_server}
    account, owner = make_account()
    message = OutgoingMessage(from_email="news@shop.example", to_email="ann@example.org", subject="Hi",
                              html="<p>Hi</p>", text="Hi", message_id=new_message_id("shop.example"))

    service.update_settings(owner, account.id, SES)
    names, factory = service.account_providers(account.id, "test", 1, config)
    ses = factory("account-ses")
    result = ses.send(message, compose_message(message))
    ses.close()
    assert (result.status, result.provider, result.provider_message_id) == ("sent", "account-ses", "ses-0001")
    authorization = Capture.seen[-1][1]["Authorization"]
    assert "Credential=AKIAACCOUNTKEY000001/" in authorization and "eu-west-1/ses" in authorization
    assert "wJalrXUtnFEMI" not in repr(ses)

    service.update_settings(owner, account.id, {"provider": "sendgrid", "sendgrid_api_key": SENDGRID_KEY})
    names, factory = service.account_providers(account.id, "test", 1, config)
    assert names[0] == "account-sendgrid"
    result = factory("account-sendgrid").send(message, None)
    assert (result.status, result.provider) == ("sent", "account-sendgrid")
    assert Capture.seen[-1][1]["Authorization"] == f"Bearer {SENDGRID_KEY}"


def test_server_providers_are_described_without_credentials(tmp_path):
    config = {"INSTANCE_PATH": str(tmp_path), "SMTP_URL": "smtp://relay%40x.example:hunter2@mail.example.com:2525",
              "SES_REGION": "eu-west-1", "SENDGRID_API_KEY": "SG.server.key"}
    described = service.server_providers(config)
    assert [p["name"] for p in described] == ["smtp", "ses", "sendgrid"]
    text = json.dumps(described)
    assert "mail.example.com:2525" in text and "eu-west-1" in text
    assert "hunter2" not in text and "relay@x" not in text and "relay%40x" not in text and "SG.server" not in text


# --- The account's relay is a tenant's choice: the public internet only, mail ports only -------------

@pytest.mark.parametrize("host, issue", [
    ("127.0.0.1", "This is a loopback address: your relay must be reachable on the public internet."),
    ("::1", "This is a loopback address"), ("[::ffff:127.0.0.1]", "This is a loopback address"),
    ("10.0.0.5", "This is a private address"), ("192.168.1.20", "This is a private address"),
    ("fd00::25", "This is a private address"),
    ("169.254.169.254", "This is a link-local address"), ("fe80::1", "This is a link-local address"),
    ("224.0.0.9", "This is a multicast address"), ("0.0.0.0", "This is an unspecified address"),
    ("localhost", "This host name does not resolve to public internet addresses"),
])
def test_a_relay_on_a_private_address_is_refused_when_saved(make_account, host, issue):
    account, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {**SMTP, "smtp_host": host})
    assert issues(exc)["smtp_host"].startswith(issue)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SendingConfig)) == 0


@pytest.mark.parametrize("port", ["22", "80", "3306", "6379", "8025"])
def test_a_relay_port_other_than_the_mail_ports_is_refused_when_saved(make_account, port):
    account, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {**SMTP, "smtp_port": port})
    assert issues(exc) == {"smtp_port": f"Port {port} is not allowed for an SMTP relay (use 25, 465, 587 or 2525)."}


@pytest.mark.parametrize("port", ["25", "465", "587", "2525"])
def test_the_mail_ports_are_allowed(make_account, port):
    account, owner = make_account()
    service.update_settings(owner, account.id, {**SMTP, "smtp_port": port})
    assert service.describe(service.get_settings(account.id))["fields"]["smtp_port"] == port


def test_allow_private_lets_an_operator_use_a_relay_on_the_lan(app, make_account):
    account, owner = make_account()
    app.config["ACCOUNT_SMTP_ALLOW_PRIVATE"] = True
    service.update_settings(owner, account.id, {**SMTP, "smtp_host": "10.0.0.5"})
    assert service.describe(service.get_settings(account.id))["fields"]["smtp_host"] == "10.0.0.5"
    with pytest.raises(ValidationError):           # the ports stay restricted
        service.update_settings(owner, account.id, {**SMTP, "smtp_host": "10.0.0.5", "smtp_port": "6379"})


def test_settings_saved_before_are_refused_at_connect_time(app, make_account, smtp_relay, tmp_path):
    """A relay saved while private addresses were allowed (or before this check existed) is refused when the
    provider connects: nothing reaches the loopback server, and the server's chain takes the email."""
    relay = smtp_relay(auth=True)
    account, owner = make_account()
    service.update_settings(owner, account.id, relay_settings(relay.port))
    app.config["ACCOUNT_SMTP_ALLOW_PRIVATE"] = False
    config = {"INSTANCE_PATH": str(tmp_path), "ACCOUNT_SMTP_PORTS": app.config["ACCOUNT_SMTP_PORTS"]}
    names, factory = service.account_providers(account.id, "test", 1, config)
    message = OutgoingMessage(from_email="news@shop.example", to_email="ann@example.org", subject="Hi",
                              html="<p>Hi</p>", text="Hi", message_id=new_message_id("shop.example"),
                              account_id=str(account.id))
    own = factory("account-smtp")
    result = own.send(message, compose_message(message))
    assert result.status == "transient"
    assert result.error == (f"cannot connect to 127.0.0.1:{relay.port}: the relay's address is a loopback address, "
                            "not a public internet one")
    assert relay.peers == set() and relay.messages == []
    port_config = {"INSTANCE_PATH": str(tmp_path), "ACCOUNT_SMTP_ALLOW_PRIVATE": True}     # default ports
    result = service.account_providers(account.id, "test", 1, port_config)[1]("account-smtp").send(
        message, compose_message(message))
    assert f"port {relay.port} is not allowed" in result.error and relay.peers == set()


def test_the_relays_own_words_are_never_shown(app, make_account, smtp_relay):
    relay = smtp_relay(auth=True)
    account, owner = make_account(email="owner@shop.example")
    service.update_settings(owner, account.id, relay_settings(relay.port, smtp_password="not-the-password"))
    names, factory = service.account_providers(account.id, "test", 1, dict(app.config))
    message = OutgoingMessage(from_email="news@shop.example", to_email="ann@example.org", subject="Hi",
                              html="<p>Hi</p>", text="Hi", message_id=new_message_id("shop.example"))
    error = factory("account-smtp").send(message, compose_message(message)).error
    assert error == (f"cannot connect to 127.0.0.1:{relay.port}: authentication failed (535 5.7.8): "
                     "check the user name and password")
    assert "credentials invalid" not in error.lower()


# --- Changing where the password goes needs the password -------------------------------------------

@pytest.mark.parametrize("change", [{"smtp_host": "93.184.216.34"}, {"smtp_port": "2525"}, {"smtp_tls": "ssl"},
                                    {"smtp_username": "someone-else"}])
def test_changing_host_port_tls_or_user_needs_the_password_again(make_account, change):
    account, owner = make_account()
    service.update_settings(owner, account.id, SMTP)
    with pytest.raises(ValidationError) as exc:
        service.update_settings(owner, account.id, {**SMTP, **change, "smtp_password": ""})
    assert issues(exc) == {"smtp_password": service.PASSWORD_AGAIN}
    assert service.describe(service.get_settings(account.id))["fields"]["smtp_host"] == SMTP["smtp_host"]
    service.update_settings(owner, account.id, {**SMTP, **change, "smtp_password": "typed-again"})
    names, factory = service.account_providers(account.id, "test", 1, {"INSTANCE_PATH": "/tmp"})
    assert factory("account-smtp").settings.password == "typed-again"
