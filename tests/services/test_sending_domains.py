"""Sending domains and verified senders: DNS checks against a local DNS server (dnslib), the daily re-check,
per-domain DKIM keys, single senders by confirmation link, who may do what, and the verified-From rule on
send, schedule and test."""
import datetime as dt
import re
from email import policy
from email.parser import BytesParser

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nudge.errors import Conflict, Forbidden, LimitExceeded, NotFound, RateLimited, ValidationError
from nudge.extensions import db
from nudge.models import AuditLog, SendingDomain
from nudge.models.types import utcnow
from nudge.services import campaigns, sending_domains, sending_settings
from nudge.services.security import decrypt, encrypt
from tests.campaign_helpers import add_contacts, fake_pipeline, ready_campaign


@pytest.fixture
def app(dns_app, tmp_path):
    return dns_app(OUTBOX_DIR=str(tmp_path / "outbox"), BASE_URL="https://mail.example")


@pytest.fixture
def required(app):
    app.config["REQUIRE_VERIFIED_DOMAINS"] = True
    return app


def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def publish_all(zone, row, spf="v=spf1 mx ~all"):
    """Publish everything a domain's page asks for."""
    described = sending_domains.describe_domain(row)
    zone.publish(row.domain, described["verify_record"]["value"], spf)
    zone.publish(*sending_domains.dkim_record(row))
    zone.publish(f"_dmarc.{row.domain}", f"v=DMARC1; p=none; rua=mailto:dmarc@{row.domain}")


def issues(exc):
    return {d["field"]: d["issue"] for d in exc.value.details}


# --- Adding and checking -------------------------------------------------------------------------------

def test_a_new_domain_gets_a_token_and_its_own_key_and_is_verified_once_its_txt_is_published(make_account, dns_zone):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, " News@Shop.Example. ")
    assert row.domain == "shop.example" and not row.verified and re.fullmatch(r"[0-9a-f]{32}", row.verify_token)
    assert re.fullmatch(r"nudge\d{6}", row.dkim_selector)
    assert "PRIVATE KEY" not in row.dkim_key_encrypted and "PRIVATE KEY" in decrypt(row.dkim_key_encrypted)
    described = sending_domains.describe_domain(row)
    assert described["verify_record"] == {"type": "TXT", "name": "shop.example",
                                          "value": f"nudge-verify={row.verify_token}"}
    assert described["dkim_key"] == "RSA 2048-bit"

    sending_domains.check_domain(owner, row.id)
    assert not row.verified and row.checked_at is not None
    assert {name: check["status"] for name, check in row.checks.items()} == {
        "verify": "missing", "spf": "missing", "dkim": "missing", "dmarc": "missing"}
    assert row.checks["verify"]["expected"] == f"nudge-verify={row.verify_token}"

    publish_all(dns_zone, row)
    sending_domains.check_domain(owner, row.id)
    assert row.verified
    assert {name: check["status"] for name, check in row.checks.items()} == {
        "verify": "ok", "spf": "ok", "dkim": "ok", "dmarc": "ok"}
    assert row.checks["spf"]["found"] == ["v=spf1 mx ~all"]
    actions = db.session.scalars(sa.select(AuditLog.action).where(AuditLog.account_id == account.id)).all()
    assert "sending_domain.added" in actions and "sending_domain.verified" in actions


def test_checks_say_what_is_wrong(make_account, dns_zone):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    other_key = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    from nudge.delivery.message import dkim_public_record
    dns_zone.publish("shop.example", "nudge-verify=someone-elses-token", "v=spf1 mx ~all", "v=spf1 a ~all")
    dns_zone.publish(sending_domains.dkim_record(row)[0], dkim_public_record(other_key))
    dns_zone.publish("_dmarc.shop.example", "v=DMARC1; p=none", "v=DMARC1; p=reject")
    sending_domains.check_domain(owner, row.id)
    assert {name: check["status"] for name, check in row.checks.items()} == {
        "verify": "wrong", "spf": "wrong", "dkim": "wrong", "dmarc": "wrong"}
    assert not row.verified


def test_spf_must_include_the_servers_providers(make_account, dns_zone, app):
    app.config["SES_REGION"] = "eu-west-1"
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    dns_zone.publish("shop.example", "v=spf1 mx ~all")
    sending_domains.check_domain(owner, row.id)
    assert row.checks["spf"]["status"] == "wrong" and "amazonses.com" in row.checks["spf"]["note"]
    assert row.checks["spf"]["expected"] == "v=spf1 include:amazonses.com ~all"


def test_a_failed_lookup_is_reported_and_never_verifies(make_account, dns_zone):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    dns_zone.failing.add("shop.example")
    sending_domains.check_domain(owner, row.id)
    assert row.checks["verify"]["status"] == "error" and "failed" in row.checks["verify"]["note"]
    assert not row.verified


def test_domains_are_validated_unique_and_capped(make_account):
    account, owner = make_account()
    for bad in ("not a domain", "localhost", "", "1.2.3.4", "-x.example"):
        with pytest.raises(ValidationError) as exc:
            sending_domains.add_domain(owner, bad)
        assert "domain" in issues(exc)
    sending_domains.add_domain(owner, "shop.example")
    with pytest.raises(Conflict):
        sending_domains.add_domain(owner, "SHOP.example")
    for n in range(sending_domains.MAX_DOMAINS - 1):
        db.session.add(SendingDomain(account_id=account.id, domain=f"d{n}.example", verify_token="t",
                                     dkim_selector="s", checks={}))
    db.session.commit()
    with pytest.raises(LimitExceeded):
        sending_domains.add_domain(owner, "one-too-many.example")


# --- The daily re-check -------------------------------------------------------------------------------

def test_the_daily_recheck_unverifies_a_domain_whose_txt_disappeared_but_not_on_a_failed_lookup(make_account,
                                                                                                 dns_zone):
    from nudge import tasks
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    publish_all(dns_zone, row)
    assert tasks.recheck_sending_domains.call_local() == {"checked": 1, "verified": 1, "unverified": 0}
    assert db.session.get(SendingDomain, row.id).verified
    # Checked just now: the next daily run leaves it alone.
    assert sending_domains.recheck_domains()["checked"] == 0

    later = utcnow() + dt.timedelta(days=1)
    dns_zone.failing.add("shop.example")
    assert sending_domains.recheck_domains(now=later) == {"checked": 1, "verified": 0, "unverified": 0}
    assert db.session.get(SendingDomain, row.id).verified

    dns_zone.failing.clear()
    dns_zone.withdraw("shop.example")
    assert sending_domains.recheck_domains(now=later + dt.timedelta(days=1)) == {
        "checked": 1, "verified": 0, "unverified": 1}
    assert not db.session.get(SendingDomain, row.id).verified
    assert "sending_domain.unverified" in db.session.scalars(sa.select(AuditLog.action)).all()


# --- DKIM keys ------------------------------------------------------------------------------------------

def test_mail_is_signed_with_the_most_specific_domains_key(make_account):
    account, owner = make_account()
    parent = sending_domains.add_domain(owner, "shop.example")
    child = sending_domains.add_domain(owner, "mail.shop.example")
    assert sending_domains.dkim_for(account.id, "a@shop.example")[1] == "shop.example"
    assert sending_domains.dkim_for(account.id, "a@news.shop.example")[1] == "shop.example"
    assert sending_domains.dkim_for(account.id, "a@mail.shop.example")[1:] == (
        "mail.shop.example", decrypt(child.dkim_key_encrypted))
    assert sending_domains.dkim_for(account.id, "a@othershop.example") is None
    other, other_owner = make_account()
    assert sending_domains.dkim_for(other.id, "a@shop.example") is None
    sending_domains.remove_domain(owner, parent.id)
    assert sending_domains.dkim_for(account.id, "a@shop.example") is None


def test_a_domain_key_can_be_pasted_or_regenerated(make_account):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    key = ed25519.Ed25519PrivateKey.generate()
    sending_domains.set_domain_key(owner, row.id, {"dkim_selector": "ed1", "dkim_private_key": pem(key)})
    assert sending_domains.dkim_for(account.id, "a@shop.example") == ("ed1", "shop.example", pem(key))
    assert sending_domains.dkim_record(row)[1].startswith("v=DKIM1; k=ed25519; p=")
    sending_domains.set_domain_key(owner, row.id, {"dkim_key_action": "generate"})
    assert row.dkim_selector != "ed1" and sending_domains.dkim_for(account.id, "a@shop.example")[2] != pem(key)
    generated = row.dkim_selector
    sending_domains.set_domain_key(owner, row.id, {"dkim_key_action": "generate"})
    assert row.dkim_selector != generated      # a new key never takes over the old key's selector


@pytest.mark.parametrize("text, fragment", [
    ("hello", "not a PEM private key"),
    (pem(ec.generate_private_key(ec.SECP256R1())), "RSA or Ed25519"),
    (rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")).decode(), "passphrase"),
])
def test_bad_dkim_keys_are_rejected(make_account, text, fragment):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    before = row.dkim_key_encrypted
    with pytest.raises(ValidationError) as exc:
        sending_domains.set_domain_key(owner, row.id, {"dkim_selector": "s1", "dkim_private_key": text})
    assert fragment in issues(exc)["dkim_private_key"]
    db.session.rollback()
    assert db.session.get(SendingDomain, row.id).dkim_key_encrypted == before


def test_the_migration_carries_the_accounts_key_over_to_a_domain(app, make_account):
    """0014 moves sending_configs' one DKIM key to a sending domain row: same domain, selector and key."""
    from flask_migrate import downgrade, upgrade
    account, owner = make_account()
    account_id = account.id
    key = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    db.session.commit()
    db.session.remove()
    try:
        downgrade(revision="0013")
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO sending_configs (id, account_id, dkim_domain, dkim_selector, "
                                 "dkim_key_encrypted, updated_at) VALUES (:id, :account, 'shop.example', 'legacy', "
                                 ":key, CURRENT_TIMESTAMP)"),
                         {"id": "0" * 32 if db.engine.dialect.name == "sqlite" else "00000000-0000-0000-0000-000000000001",
                          "account": account_id.hex if db.engine.dialect.name == "sqlite" else str(account_id),
                          "key": encrypt(key)})
    finally:
        upgrade()
    assert sending_domains.dkim_for(account_id, "news@shop.example") == ("legacy", "shop.example", key)
    row = db.session.scalar(sa.select(SendingDomain).where(SendingDomain.account_id == account_id))
    assert not row.verified and len(row.verify_token) == 32


# --- Single senders ---------------------------------------------------------------------------------------

def outbox_mails(tmp_path):
    return sorted((tmp_path / "outbox").rglob("*.eml"))


def test_a_single_sender_is_verified_by_the_link_mailed_to_it(make_account, tmp_path, required):
    account, owner = make_account()
    sender = sending_domains.add_sender(owner, "Ann.Shop@Gmail.com")
    assert sender.email == "ann.shop@gmail.com" and not sender.verified
    mails = outbox_mails(tmp_path)
    assert len(mails) == 1
    mail = BytesParser(policy=policy.default).parsebytes(mails[0].read_bytes())
    assert mail["To"] == "ann.shop@gmail.com" and mail["From"] == "NudgeCampaign <no-reply@mail.example>"
    text = mail.get_body(("plain",)).get_content()
    token = re.search(r"https://mail\.example/settings/sending/senders/confirm/(\S+)", text).group(1)
    assert not sending_domains.from_verified(account.id, "ann.shop@gmail.com")
    confirmed = sending_domains.confirm_sender(token)
    assert confirmed.verified and sending_domains.from_verified(account.id, "Ann.Shop@gmail.com")
    # Only that address: not the rest of gmail.com.
    assert not sending_domains.from_verified(account.id, "other@gmail.com")
    with pytest.raises(ValidationError):
        sending_domains.confirm_sender(token[:-2] + "xx")


def test_a_confirmation_link_expires_and_resending_is_throttled(make_account, monkeypatch):
    account, owner = make_account()
    sender = sending_domains.add_sender(owner, "ann@gmail.com")
    token = sending_domains.confirm_link(sender).rpartition("/")[2]
    monkeypatch.setattr(sending_domains, "SENDER_LINK_MAX_AGE", -1)
    with pytest.raises(ValidationError) as exc:
        sending_domains.confirm_sender(token)
    assert "expired" in exc.value.message
    with pytest.raises(ValidationError):
        sending_domains.resend_confirmation(owner, sender.id)
    sender.requested_at = utcnow() - dt.timedelta(minutes=10)
    db.session.commit()
    assert sending_domains.resend_confirmation(owner, sender.id).requested_at > utcnow() - dt.timedelta(minutes=1)
    with pytest.raises(Conflict):
        sending_domains.add_sender(owner, "ANN@gmail.com")


def test_confirmation_mails_count_against_the_hourly_test_cap(make_account, app, tmp_path):
    app.config["TEST_SENDS_PER_HOUR"] = 2
    account, owner = make_account()
    for _ in range(2):
        sender = sending_domains.add_sender(owner, "ann@gmail.com")
        sending_domains.remove_sender(owner, sender.id)
    with pytest.raises(RateLimited):
        sending_domains.add_sender(owner, "ann@gmail.com")
    assert len(outbox_mails(tmp_path)) == 2 and sending_domains.list_senders(owner) == []


# --- Roles and tenants ------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_only_owners_and_admins_manage_domains(make_account, make_user, role):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    member = make_user(account, role=role)
    for call in (lambda: sending_domains.add_domain(member, "x.example"),
                 lambda: sending_domains.check_domain(member, row.id),
                 lambda: sending_domains.remove_domain(member, row.id),
                 lambda: sending_domains.add_sender(member, "a@gmail.com"),
                 lambda: sending_domains.list_domains(member)):
        with pytest.raises(Forbidden):
            call()
    admin = make_user(account, role="admin")
    assert sending_domains.add_domain(admin, "admin.example").domain == "admin.example"


def test_another_accounts_domain_is_not_found(make_account):
    account, owner = make_account()
    row = sending_domains.add_domain(owner, "shop.example")
    other, intruder = make_account()
    for call in (lambda: sending_domains.get_domain(intruder, row.id),
                 lambda: sending_domains.check_domain(intruder, row.id),
                 lambda: sending_domains.remove_domain(intruder, row.id)):
        with pytest.raises(NotFound):
            call()
    assert sending_domains.list_domains(intruder) == []
    # The same domain may be added by another account; only its own verification counts for it.
    sending_domains.add_domain(intruder, "shop.example")


# --- The verified-From rule -------------------------------------------------------------------------------

@pytest.fixture
def shop(make_account):
    account, owner = make_account()
    add_contacts(account, "ann@example.org")
    return account, owner


def test_the_settings_test_email_is_refused_from_an_unverified_default_sender(make_account, required):
    account, owner = make_account(email="owner@shop.example")
    with pytest.raises(ValidationError) as exc:
        sending_settings.send_test_email(owner, account.id)
    assert "from_email" in issues(exc)


def test_an_unverified_from_is_refused_on_send_schedule_and_test_when_required(shop, required, monkeypatch,
                                                                                dns_zone):
    account, owner = shop
    pipeline = fake_pipeline(monkeypatch)
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    for attempt in (lambda: campaigns.send_now(owner, campaign.id),
                    lambda: campaigns.schedule(owner, campaign.id, "2099-01-01T09:00"),
                    lambda: campaigns.send_test(owner, campaign.id, ["me@example.org"])):
        with pytest.raises(ValidationError) as exc:
            attempt()
        assert exc.value.code == "VALIDATION_ERROR" and "from_email" in issues(exc)
        assert "not a verified sender" in issues(exc)["from_email"]
    assert pipeline.calls == [] and campaigns.get_campaign(account.id, campaign.id).status == "draft"
    blocking = [item for item in campaigns.readiness(campaign) if item["blocking"]]
    assert [item["code"] for item in blocking] == ["from_email_unverified"]

    row = sending_domains.add_domain(owner, "shop.example")
    publish_all(dns_zone, row)
    sending_domains.check_domain(owner, row.id)
    assert campaigns.send_test(owner, campaign.id, ["me@example.org"])[0]["status"] == "sent"
    assert campaigns.send_now(owner, campaign.id).status == "sending"


def test_a_subdomain_of_a_verified_domain_is_verified_too(shop, required, dns_zone):
    account, owner = shop
    row = sending_domains.add_domain(owner, "shop.example")
    publish_all(dns_zone, row)
    sending_domains.check_domain(owner, row.id)
    assert sending_domains.from_verified(account.id, "news@mail.shop.example")
    assert not sending_domains.from_verified(account.id, "news@evilshop.example")
    assert not sending_domains.from_verified(account.id, "news@shop.example.evil")


def test_open_signup_requires_verified_senders(shop, app, monkeypatch):
    account, owner = shop
    app.config["SIGNUP"] = "open"
    fake_pipeline(monkeypatch)
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    with pytest.raises(ValidationError) as exc:
        campaigns.send_now(owner, campaign.id)
    assert "from_email" in issues(exc)


def test_when_optional_an_unverified_from_is_a_note_and_sends(shop, app, monkeypatch):
    account, owner = shop
    pipeline = fake_pipeline(monkeypatch)
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    items = {item["code"]: item for item in campaigns.readiness(campaign)}
    assert items["from_email_unverified"]["blocking"] is False
    assert campaigns.send_now(owner, campaign.id).status == "sending" and pipeline.names() == ["start_send"]


def test_an_account_with_its_own_provider_may_send_unverified_but_never_through_the_servers(shop, required):
    account, owner = shop
    sending_settings.update_settings(owner, account.id, {"provider": "smtp", "smtp_host": "93.184.215.14",
                                                         "smtp_port": "587", "smtp_tls": "starttls"})
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    assert not [item for item in campaigns.readiness(campaign) if item["blocking"]]
    names, _ = sending_settings.account_providers(account.id, "test", 1, required.config,
                                                  from_email="news@shop.example")
    assert names == ["account-smtp"]
    verified = sending_domains.add_sender(owner, "boss@gmail.com")
    sending_domains.confirm_sender(sending_domains.confirm_link(verified).rpartition("/")[2])
    names, _ = sending_settings.account_providers(account.id, "test", 1, required.config,
                                                  from_email="boss@gmail.com")
    assert names == ["account-smtp", "outbox"]


def test_reply_to_is_not_restricted(shop, required, dns_zone, monkeypatch):
    account, owner = shop
    fake_pipeline(monkeypatch)
    row = sending_domains.add_domain(owner, "shop.example")
    publish_all(dns_zone, row)
    sending_domains.check_domain(owner, row.id)
    campaign = ready_campaign(owner, account, from_email="news@shop.example", reply_to="someone@gmail.com")
    assert campaigns.send_now(owner, campaign.id).status == "sending"


def test_a_scheduled_campaign_whose_domain_lost_its_verification_fails_with_the_reason(shop, required, dns_zone,
                                                                                         monkeypatch):
    account, owner = shop
    pipeline = fake_pipeline(monkeypatch)
    row = sending_domains.add_domain(owner, "shop.example")
    publish_all(dns_zone, row)
    sending_domains.check_domain(owner, row.id)
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    campaigns.schedule(owner, campaign.id, "2099-01-01T09:00")
    dns_zone.withdraw("shop.example")
    sending_domains.recheck_domains(now=utcnow() + dt.timedelta(days=1))
    assert campaigns.start_due_campaigns(now=dt.datetime(2099, 1, 2)) == []
    failed = campaigns.get_campaign(account.id, campaign.id)
    assert failed.status == "failed" and "not a verified sender" in failed.paused_reason
    assert pipeline.calls == []
