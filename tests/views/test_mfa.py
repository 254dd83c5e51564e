"""The Security page: enrolling an authenticator, recovery codes, turning MFA off, owner resets."""
import html
import re

import pyotp
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import AuditLog, User
from nudge.services import mfa
from nudge.services.security import decrypt
from tests.conftest import PASSWORD, totp_code
from tests.views.test_auth import manual_key, recovery_codes, wrong_code


def text(response):
    return html.unescape(response.get_data(as_text=True))


def audit(action):
    return db.session.scalars(sa.select(AuditLog).where(AuditLog.action == action)).all()


def test_enrolment_page_shows_a_csp_safe_qr_code_and_the_key(client, make_account, login):
    _, owner = make_account(mfa=False)
    login(client, owner)
    page = client.get("/security/mfa/enrol")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    svg = re.search(r"<svg.*?</svg>", body, re.S).group(0)
    assert "style=" not in svg and "<script" not in svg
    assert "<script>" not in body and " style=" not in body
    secret = manual_key(page)
    assert len(secret) == 32 and re.search(r'id="manual-key">[A-Z2-7]{4} [A-Z2-7]{4} ', body)
    assert 'data-copy="#manual-key"' in body
    assert 'name="csrf_token"' in body
    assert 'autocomplete="one-time-code"' in body
    assert db.session.get(User, owner.id).totp_secret_encrypted is None  # nothing stored until confirmed
    with client.session_transaction() as session:
        assert secret not in str(dict(session))  # the pending secret is encrypted in the cookie


def test_a_wrong_enrolment_code_keeps_the_same_key(client, make_account, login):
    _, owner = make_account(mfa=False)
    login(client, owner)
    secret = manual_key(client.get("/security/mfa/enrol"))
    response = client.post("/security/mfa/enrol", data={"code": wrong_code(secret)})
    assert response.status_code == 422
    assert "didn't match" in text(response)
    assert manual_key(response) == secret
    response = client.post("/security/mfa/enrol", data={"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200 and len(recovery_codes(response)) == 10
    user = db.session.get(User, owner.id)
    assert user.mfa_enabled and decrypt(user.totp_secret_encrypted) == secret
    assert len(audit("mfa.enabled")) == 1
    assert "I have saved them" in text(response)
    # Enrolling again is not offered once it is on.
    assert client.get("/security/mfa/enrol").headers["Location"] == "/security"


def test_reloading_the_enrolment_page_keeps_the_key_until_started_over(client, make_account, login):
    _, owner = make_account(mfa=False)
    login(client, owner)
    secret = manual_key(client.get("/security/mfa/enrol"))
    assert manual_key(client.get("/security/mfa/enrol")) == secret  # a reload keeps what the app scanned
    assert "Start over with a new key" in text(client.get("/security/mfa/enrol"))

    response = client.post("/security/mfa/enrol/restart")
    assert response.status_code == 302 and response.headers["Location"] == "/security/mfa/enrol"
    fresh = manual_key(client.get("/security/mfa/enrol"))
    assert fresh != secret and manual_key(client.get("/security/mfa/enrol")) == fresh
    # The old key no longer enrols; the new one does.
    assert client.post("/security/mfa/enrol", data={"code": pyotp.TOTP(secret).now()}).status_code == 422
    response = client.post("/security/mfa/enrol", data={"code": pyotp.TOTP(fresh).now()})
    assert response.status_code == 200 and len(recovery_codes(response)) == 10
    assert decrypt(db.session.get(User, owner.id).totp_secret_encrypted) == fresh
    with client.session_transaction() as session:
        assert "mfa_enrol_secret" not in session  # a later enrolment starts from a new key


def test_a_code_from_the_first_key_enrols_after_a_reload(client, make_account, login):
    _, owner = make_account(mfa=False)
    login(client, owner)
    secret = manual_key(client.get("/security/mfa/enrol"))
    client.get("/security/mfa/enrol")
    response = client.post("/security/mfa/enrol", data={"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200 and len(recovery_codes(response)) == 10


def test_security_page_shows_status_and_regenerates_recovery_codes(client, make_account, login):
    _, owner = make_account(mfa=False)
    login(client, owner)
    secret = manual_key(client.get("/security/mfa/enrol"))
    old = recovery_codes(client.post("/security/mfa/enrol", data={"code": pyotp.TOTP(secret).now()}))

    page = client.get("/security")
    body = text(page)
    assert "Two-factor authentication" in body and "On" in body and "10 of 10 left" in body
    assert "Turn off two-factor authentication" not in body  # required on this server
    assert '<nav class="breadcrumbs"' in page.get_data(as_text=True) and "Settings" in body

    response = client.post("/security/mfa/recovery-codes", data={"code": wrong_code(secret)})
    assert response.status_code == 422 and "didn't match" in text(response)
    response = client.post("/security/mfa/recovery-codes", data={"code": pyotp.TOTP(secret).now()})
    new = recovery_codes(response)
    assert response.status_code == 200 and len(new) == 10 and not set(new) & set(old)
    assert "old codes no longer work" in text(response)
    user = db.session.get(User, owner.id)
    assert not mfa.use_recovery_code(user, old[0]) and mfa.use_recovery_code(user, new[0])
    assert len(audit("mfa.recovery_codes_regenerated")) == 1


def test_mfa_can_be_turned_off_only_when_not_required(make_app, make_account, login):
    client = make_app(REQUIRE_MFA=False).test_client()
    _, owner = make_account()
    login(client, owner)
    page = client.get("/security")
    assert "Turn off two-factor authentication" in text(page)
    response = client.post("/security/mfa/disable", data={"code": "12"})
    assert response.status_code == 422
    response = client.post("/security/mfa/disable", data={"code": totp_code(owner)})
    assert response.headers["Location"] == "/security"
    page = client.get("/security")  # still signed in, though the session version changed
    assert page.status_code == 200 and "Set up two-factor authentication" in text(page)
    assert not db.session.get(User, owner.id).mfa_enabled
    assert len(audit("mfa.disabled")) == 1


def test_turning_mfa_off_is_refused_when_required(client, make_account, login):
    _, owner = make_account()
    login(client, owner)
    response = client.post("/security/mfa/disable", data={"code": totp_code(owner)})
    assert response.headers["Location"] == "/security"
    assert "required" in text(client.get("/security"))
    assert db.session.get(User, owner.id).mfa_enabled


def test_after_an_owner_resets_mfa_the_member_must_enrol_again(app, make_account, make_user, login):
    account, owner = make_account()
    member = make_user(account, role="marketer")
    member_client = app.test_client()
    login(member_client, member)
    assert member_client.get("/security").status_code == 200

    mfa.reset_mfa(owner, member.id)
    assert member_client.get("/security").headers["Location"].startswith("/login")  # signed out
    response = member_client.post("/login", data={"email": member.email, "password": PASSWORD})
    assert response.headers["Location"] == "/security/mfa/enrol"
    [entry] = audit("mfa.reset")
    assert entry.resources == [f"user:{member.id}"]
