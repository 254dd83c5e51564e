"""The providers' webhooks end to end: Amazon SNS (SES) and SendGrid notifications, signed here with keys
made for the test (a CA-less self-signed certificate for SNS, a P-256 key for SendGrid), through the real
endpoints (CSRF on, no session), into contacts, suppressions, events and the campaign's counts."""
import base64
import datetime as dt
import json
import time
import uuid

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from nudge.delivery.feedback import SNS, string_to_sign
from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Message, Suppression
from nudge.models.types import utcnow
from tests.campaign_helpers import add_contacts

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                 "&TopicArn=arn:aws:sns:eu-west-1:123456789012:ses-feedback&Token=2336412f37")
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
OTHER_TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback-us"
STRANGER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:anyone-can-make-a-topic"


@pytest.fixture(scope="module")
def sns_key():
    """(private key, PEM certificate) of a self-signed RSA certificate standing in for SNS's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sendgrid_key():
    """(private key, the public key as SendGrid shows it: base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, base64.b64encode(der).decode()


class FakeFetch:
    """The HTTPS GETs of the SNS verifier: the certificate from CERT_URL, anything else recorded."""

    def __init__(self, certificate):
        self.certificate = certificate
        self.urls = []

    def __call__(self, url):
        self.urls.append(url)
        return self.certificate if url == CERT_URL else b"<ConfirmSubscriptionResponse/>"


@pytest.fixture
def app(make_app, sendgrid_key):
    return make_app(WTF_CSRF_ENABLED=True, SENDGRID_WEBHOOK_PUBLIC_KEY=sendgrid_key[1],
                    SES_SNS_TOPICS=frozenset({TOPIC, OTHER_TOPIC}))


@pytest.fixture
def fetch(app, sns_key):
    fake = FakeFetch(sns_key[1])
    app.extensions["nudge.sns"] = SNS(fetch=fake)
    return fake


@pytest.fixture
def shop(make_account):
    """An account with a sent campaign to Ann (through SES) and Bob (through SendGrid)."""
    account, _ = make_account()
    ann, bob = add_contacts(account, "ann@example.org", "bob@example.org")
    campaign = Campaign(account_id=account.id, name="May news", status="sent", recipient_count=2, sent_count=2)
    db.session.add(campaign)
    db.session.flush()
    to_ann = Message(account_id=account.id, campaign_id=campaign.id, contact_id=ann.id, email=ann.email,
                     status="sent", provider="ses", provider_message_id="0102018f-ses-ann", sent_at=utcnow())
    to_bob = Message(account_id=account.id, campaign_id=campaign.id, contact_id=bob.id, email=bob.email,
                     status="sent", provider="sendgrid", provider_message_id="sg-bob-1", sent_at=utcnow())
    db.session.add_all([to_ann, to_bob])
    db.session.commit()
    return account, campaign, (ann, bob), (to_ann, to_bob)


def state(contact):
    db.session.expire_all()
    contact = db.session.get(Contact, contact.id)
    suppressed = db.session.scalar(sa.select(Suppression.reason).where(Suppression.account_id == contact.account_id,
                                                                       Suppression.email == contact.email))
    return contact.status, suppressed


def counts(campaign):
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    return campaign.bounced_count, campaign.complained_count


def event_count(event_type):
    return db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent)
                             .where(EmailEvent.event_type == event_type))


# --- Amazon SNS / SES ----------------------------------------------------------------------------

def sns_message(key, message_type="Notification", version="2", **fields):
    message = {"Type": message_type, "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
               "Timestamp": "2026-11-28T10:00:00.000Z", "SignatureVersion": version, "SigningCertURL": CERT_URL}
    if message_type == "SubscriptionConfirmation":
        message.update(Message="You have chosen to subscribe to the topic.", Token="2336412f37",
                       SubscribeURL=SUBSCRIBE_URL)
    message.update(fields)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    message["Signature"] = base64.b64encode(key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)).decode()
    return message


def ses_bounce(message, bounce_type="Permanent", email="ann@example.org", with_header=True):
    mail = {"messageId": message.provider_message_id, "destination": [email], "source": "news@shop.example"}
    if with_header:
        mail["headers"] = [{"name": "X-Nudge-Message-Id", "value": str(message.id)}]
    return json.dumps({"notificationType": "Bounce", "mail": mail, "bounce": {
        "bounceType": bounce_type, "bounceSubType": "General", "feedbackId": f"fb-{bounce_type}",
        "bouncedRecipients": [{"emailAddress": email, "status": "5.1.1",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})


def ses_complaint(message, email="ann@example.org"):
    return json.dumps({"eventType": "Complaint", "mail": {"messageId": message.provider_message_id},
                       "complaint": {"feedbackId": "fb-c", "complaintFeedbackType": "abuse",
                                     "complainedRecipients": [{"emailAddress": email}]}})


def post_sns(client, message):
    return client.post("/hooks/ses", data=json.dumps(message), content_type="text/plain; charset=UTF-8",
                       headers={"x-amz-sns-message-type": message["Type"]})


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_hard_bounce_suppresses_the_contact_once(client, fetch, shop, sns_key, version):
    _, campaign, (ann, bob), (to_ann, _) = shop
    message = sns_message(sns_key[0], version=version, Message=ses_bounce(to_ann))

    first = post_sns(client, message)
    again = post_sns(client, message)

    assert first.status_code == 200 and first.get_json() == {"data": {"recorded": 1, "duplicates": 0, "ignored": 0}}
    assert again.status_code == 200 and again.get_json()["data"]["duplicates"] == 1
    assert state(ann) == ("bounced", "hard_bounce") and state(bob) == ("active", None)
    assert counts(campaign) == (1, 0) and event_count("email.bounced") == 1
    assert fetch.urls == [CERT_URL]     # the certificate is fetched once, then cached


def test_an_ses_complaint_and_a_soft_bounce_found_by_the_ses_message_id(client, fetch, shop, sns_key):
    _, campaign, (ann, _), (to_ann, _) = shop
    soft = post_sns(client, sns_message(sns_key[0], Message=ses_bounce(to_ann, "Transient", with_header=False)))
    assert soft.get_json()["data"]["recorded"] == 1
    assert state(ann) == ("active", None) and counts(campaign) == (0, 0)

    complaint = post_sns(client, sns_message(sns_key[0], Message=ses_complaint(to_ann)))
    assert complaint.status_code == 200 and complaint.get_json()["data"]["recorded"] == 1
    assert state(ann) == ("complained", "complaint") and counts(campaign) == (0, 1)


def test_a_tampered_sns_message_is_refused(client, fetch, shop, sns_key):
    _, campaign, (ann, _), (to_ann, _) = shop
    message = sns_message(sns_key[0], Message=ses_bounce(to_ann, "Transient"))
    message["Message"] = ses_bounce(to_ann, "Permanent")

    response = post_sns(client, message)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert state(ann) == ("active", None) and counts(campaign) == (0, 0) and event_count("email.bounced") == 0


@pytest.mark.parametrize("url", [
    "http://sns.eu-west-1.amazonaws.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
    "https://s3.amazonaws.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
])
def test_certificates_come_only_from_sns_hosts(client, fetch, shop, sns_key, url):
    _, _, (ann, _), (to_ann, _) = shop
    response = post_sns(client, sns_message(sns_key[0], Message=ses_bounce(to_ann), SigningCertURL=url))
    assert response.status_code == 403
    assert fetch.urls == [] and state(ann) == ("active", None)


@pytest.mark.parametrize("message_type", ["Notification", "SubscriptionConfirmation"])
def test_a_topic_not_listed_is_refused_before_anything_is_fetched(client, fetch, shop, sns_key, message_type):
    """Anyone can create an SNS topic and subscribe /hooks/ses to it; Amazon signs its messages validly."""
    _, campaign, (ann, _), (to_ann, _) = shop
    fields = {"Message": ses_bounce(to_ann)} if message_type == "Notification" else {}
    response = post_sns(client, sns_message(sns_key[0], message_type, TopicArn=STRANGER_TOPIC, **fields))
    assert response.status_code == 403
    assert "NUDGE_SES_SNS_TOPICS" in response.get_json()["error"]["message"]
    assert fetch.urls == []         # neither the certificate nor the SubscribeURL
    assert state(ann) == ("active", None) and counts(campaign) == (0, 0)


def test_every_listed_topic_is_heard(client, fetch, shop, sns_key):
    _, _, (ann, _), (to_ann, _) = shop
    response = post_sns(client, sns_message(sns_key[0], TopicArn=OTHER_TOPIC, Message=ses_bounce(to_ann)))
    assert response.status_code == 200 and state(ann) == ("bounced", "hard_bounce")


def test_without_listed_topics_every_sns_message_is_refused(make_app, make_account, sns_key):
    app = make_app(SES_SNS_TOPICS=frozenset())
    fake = FakeFetch(sns_key[1])
    app.extensions["nudge.sns"] = SNS(fetch=fake)
    for message_type, fields in (("Notification", {"Message": "{}"}), ("SubscriptionConfirmation", {})):
        response = post_sns(app.test_client(), sns_message(sns_key[0], message_type, **fields))
        assert response.status_code == 403
        assert "no topic is listed in NUDGE_SES_SNS_TOPICS" in response.get_json()["error"]["message"]
    assert fake.urls == []


def test_a_certificate_that_did_not_sign_is_refused(client, fetch, shop, sns_key):
    _, _, (ann, _), (to_ann, _) = shop
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = post_sns(client, sns_message(other_key, Message=ses_bounce(to_ann)))
    assert response.status_code == 403 and state(ann) == ("active", None)


def test_a_subscription_is_confirmed_only_at_an_sns_url(client, fetch, sns_key):
    response = post_sns(client, sns_message(sns_key[0], "SubscriptionConfirmation"))
    assert response.status_code == 200 and response.get_json() == {"data": {"confirmed": True}}
    assert fetch.urls == [CERT_URL, SUBSCRIBE_URL]

    fetch.urls.clear()
    evil = sns_message(sns_key[0], "SubscriptionConfirmation", SubscribeURL="https://evil.example/?Action=x")
    response = post_sns(client, evil)
    assert response.status_code == 400 and fetch.urls == []


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", json.dumps({"Type": "Unknown"}).encode()])
def test_malformed_sns_bodies_are_400(client, fetch, body):
    response = client.post("/hooks/ses", data=body, content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_signed_notification_that_is_not_ses_json_is_400(client, fetch, sns_key):
    response = post_sns(client, sns_message(sns_key[0], Message="hello"))
    assert response.status_code == 400


def test_unknown_messages_and_other_notification_types_are_acknowledged(client, fetch, shop, sns_key):
    _, campaign, (ann, _), (to_ann, _) = shop
    ghost = Message(id=uuid.uuid4(), email="ann@example.org", provider_message_id="never-sent")
    delivery = json.dumps({"notificationType": "Delivery", "mail": {"messageId": to_ann.provider_message_id},
                           "delivery": {"recipients": ["ann@example.org"]}})
    for payload in (ses_bounce(ghost), delivery):
        response = post_sns(client, sns_message(sns_key[0], Message=payload))
        assert response.status_code == 200
    assert state(ann) == ("active", None) and counts(campaign) == (0, 0)


def test_an_sns_bounce_naming_another_accounts_contact_touches_nothing_there(client, fetch, shop, sns_key,
                                                                             make_account):
    _, _, (ann, _), (to_ann, _) = shop
    other, _ = make_account()
    (mallory,) = add_contacts(other, "mallory@example.org")
    response = post_sns(client, sns_message(sns_key[0], Message=ses_bounce(to_ann, email="mallory@example.org")))
    assert response.get_json()["data"] == {"recorded": 0, "duplicates": 0, "ignored": 1}
    assert state(mallory) == ("active", None) and state(ann) == ("active", None)


# --- SendGrid ------------------------------------------------------------------------------------

def signed(key, events, timestamp=None):
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    body = json.dumps(events).encode()
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                  "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def post_sendgrid(client, body, headers):
    return client.post("/hooks/sendgrid", data=body, content_type="application/json", headers=headers)


def test_sendgrid_events_are_verified_and_recorded_once(client, shop, sendgrid_key, make_account):
    account, campaign, (ann, bob), (to_ann, to_bob) = shop
    events = [
        {"event": "delivered", "email": "ann@example.org", "sg_event_id": "e0", "nudge_message_id": str(to_ann.id)},
        {"event": "bounce", "type": "blocked", "email": "ann@example.org", "sg_event_id": "e1",
         "reason": "421 try later", "nudge_message_id": str(to_ann.id)},
        {"event": "spamreport", "email": "bob@example.org", "sg_event_id": "e2",
         "sg_message_id": "sg-bob-1.filterdrecv-5645d9c87f-abc.0"},
        {"event": "bounce", "type": "bounce", "email": "ann@example.org", "sg_event_id": "e3",
         "reason": "550 5.1.1 no such user", "nudge_message_id": str(to_ann.id)},
        {"event": "bounce", "type": "bounce", "email": "zed@example.org", "sg_event_id": "e4",
         "nudge_message_id": str(uuid.uuid4())},
    ]
    body, headers = signed(sendgrid_key[0], events)

    first = post_sendgrid(client, body, headers)
    again = post_sendgrid(client, body, headers)

    assert first.status_code == 200
    assert first.get_json() == {"data": {"recorded": 3, "duplicates": 0, "ignored": 1}}
    assert again.get_json() == {"data": {"recorded": 0, "duplicates": 3, "ignored": 1}}
    assert state(ann) == ("bounced", "hard_bounce") and state(bob) == ("complained", "complaint")
    assert counts(campaign) == (1, 1)
    kinds = sorted(e.event_data["type"] for e in db.session.scalars(
        sa.select(EmailEvent).where(EmailEvent.event_type == "email.bounced")))
    assert kinds == ["hard", "soft"]


def test_a_dropped_bounced_address_is_a_hard_bounce(client, shop, sendgrid_key):
    _, campaign, (_, bob), (_, to_bob) = shop
    body, headers = signed(sendgrid_key[0], [
        {"event": "dropped", "reason": "Unsubscribed Address", "email": "bob@example.org", "sg_event_id": "d0",
         "nudge_message_id": str(to_bob.id)},
        {"event": "dropped", "reason": "Bounced Address", "email": "bob@example.org", "sg_event_id": "d1",
         "nudge_message_id": str(to_bob.id)}])
    assert post_sendgrid(client, body, headers).get_json()["data"]["recorded"] == 1
    assert state(bob) == ("bounced", "hard_bounce") and counts(campaign) == (1, 0)


@pytest.mark.parametrize("change", ["body", "timestamp", "signature", "missing"])
def test_a_bad_sendgrid_signature_is_403(client, shop, sendgrid_key, change):
    _, campaign, (ann, _), (to_ann, _) = shop
    events = [{"event": "spamreport", "email": "ann@example.org", "sg_event_id": "x",
               "nudge_message_id": str(to_ann.id)}]
    body, headers = signed(sendgrid_key[0], events)
    if change == "body":
        body = body.replace(b"spamreport", b"spamreporT")
    elif change == "timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(headers["X-Twilio-Email-Event-Webhook-Timestamp"]) + 1)
    elif change == "signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "bm90IGEgc2lnbmF0dXJl"
    else:
        headers = {}
    response = post_sendgrid(client, body, headers)
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "FORBIDDEN"
    assert state(ann) == ("active", None) and counts(campaign) == (0, 0)


def test_a_signed_but_malformed_sendgrid_body_is_400(client, sendgrid_key):
    now = str(int(time.time()))
    for payload in (b"{not json", b'{"event": "bounce"}'):
        signature = sendgrid_key[0].sign(now.encode() + payload, ec.ECDSA(hashes.SHA256()))
        response = post_sendgrid(client, payload, {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": now})
        assert response.status_code == 400


@pytest.mark.parametrize("age, accepted", [(-301, False), (-290, True), (290, True), (301, False),
                                           (-86400, False)])
def test_signed_sendgrid_events_older_or_newer_than_five_minutes_are_refused(client, shop, sendgrid_key, age,
                                                                            accepted):
    """A captured request replayed later is refused even though its signature is good. (age: the
    timestamp's distance from now in seconds, negative in the past.)"""
    _, campaign, (ann, _), (to_ann, _) = shop
    body, headers = signed(sendgrid_key[0], [{"event": "spamreport", "email": "ann@example.org",
                                              "sg_event_id": "r", "nudge_message_id": str(to_ann.id)}],
                           timestamp=str(int(time.time()) + age))
    response = post_sendgrid(client, body, headers)
    if accepted:
        assert response.status_code == 200 and state(ann) == ("complained", "complaint")
    else:
        assert response.status_code == 403 and state(ann) == ("active", None)
        assert "more than 5 minutes from now" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("timestamp", ["", "soon", "-5", "1e9", "99999999999999999999"])
def test_a_sendgrid_timestamp_that_is_not_unix_seconds_is_refused(client, sendgrid_key, timestamp):
    body, headers = signed(sendgrid_key[0], [], timestamp=timestamp)
    assert post_sendgrid(client, body, headers).status_code == 403


def test_sendgrid_events_are_refused_without_a_configured_key(make_app, sendgrid_key):
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=None)
    body, headers = signed(sendgrid_key[0], [])
    response = app.test_client().post("/hooks/sendgrid", data=body, headers=headers)
    assert response.status_code == 403
    assert "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY" in response.get_json()["error"]["message"]


def test_a_pem_public_key_works_too(make_app, sendgrid_key, shop):
    _, _, (ann, _), (to_ann, _) = shop
    pem = sendgrid_key[0].public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=pem)
    body, headers = signed(sendgrid_key[0], [{"event": "spamreport", "email": "ann@example.org",
                                              "sg_event_id": "p", "nudge_message_id": str(to_ann.id)}])
    assert app.test_client().post("/hooks/sendgrid", data=body, headers=headers).status_code == 200
    assert state(ann) == ("complained", "complaint")


# --- Settings → Sending --------------------------------------------------------------------------

def test_the_sending_page_shows_the_webhook_addresses_and_recent_counts(make_app, make_account, login, sns_key):
    app = make_app(BASE_URL="https://mail.shop.example", SENDGRID_WEBHOOK_PUBLIC_KEY=None,
                   SES_SNS_TOPICS=frozenset({TOPIC}))
    app.extensions["nudge.sns"] = SNS(fetch=FakeFetch(sns_key[1]))
    client = app.test_client()
    account, owner = make_account()
    (ann,) = add_contacts(account, "ann@example.org")
    campaign = Campaign(account_id=account.id, name="May news", status="sent")
    db.session.add(campaign)
    db.session.flush()
    to_ann = Message(account_id=account.id, campaign_id=campaign.id, contact_id=ann.id, email=ann.email,
                     status="sent", provider="ses", provider_message_id="ses-ann", sent_at=utcnow())
    db.session.add(to_ann)
    db.session.commit()
    assert post_sns(client, sns_message(sns_key[0], Message=ses_bounce(to_ann))).status_code == 200

    login(client, owner)
    html = client.get("/settings/sending/").get_data(as_text=True)

    assert 'id="sending-bounces"' in html
    assert "https://mail.shop.example/hooks/ses" in html and "https://mail.shop.example/hooks/sendgrid" in html
    assert 'id="bounces-hard">1<' in html and 'id="bounces-complaints">0<' in html
    assert "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY" in html      # not set: the page says what is missing


def test_the_sending_page_says_when_no_sns_topic_is_listed(make_app, make_account, login):
    app = make_app(SES_SNS_TOPICS=frozenset())
    client = app.test_client()
    account, owner = make_account()
    login(client, owner)
    html = " ".join(client.get("/settings/sending/").get_data(as_text=True).split())
    assert "NUDGE_SES_SNS_TOPICS): until it is listed there, Amazon SNS messages are refused" in html


def test_webhook_bodies_over_the_limit_are_413_in_the_envelope(client, sendgrid_key):
    from nudge.config import HOOK_MAX_BODY_BYTES
    events = [{"event": "delivered", "email": "x" * HOOK_MAX_BODY_BYTES}]
    body, headers = signed(sendgrid_key[0], events)
    response = post_sendgrid(client, body, headers)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    response = client.post("/hooks/ses", data=b" " * (HOOK_MAX_BODY_BYTES + 1), content_type="text/plain")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_webhook_json_nested_past_the_stack_is_400(client, fetch, sns_key, sendgrid_key):
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post("/hooks/ses", data=deep, content_type="text/plain")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    body = deep.encode()
    _, headers = signed(sendgrid_key[0], [])
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    signature = sendgrid_key[0].sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(signature).decode()
    response = post_sendgrid(client, body, headers)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    # A signed SNS notification whose Message is nested past the stack.
    response = post_sns(client, sns_message(sns_key[0], Message=deep))
    assert response.status_code == 400
