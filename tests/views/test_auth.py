"""Sign-up, sign-in, sign-out, lockout, idle expiry, the MFA gate and safe redirects, through the pages."""
import datetime as dt
import html
import re
import time

import pyotp
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Account, AuditLog, LoginAttempt, User
from nudge.models.types import utcnow
from tests.conftest import PASSWORD, totp_code

GENERIC_FAILURE = "Email or password is incorrect."
LOCKED = "Too many failed attempts. Try again in 15 minutes."


def text(response):
    return html.unescape(response.get_data(as_text=True))


def actions(**filters):
    query = sa.select(AuditLog.action).order_by(AuditLog.created_at, AuditLog.id)
    for key, value in filters.items():
        query = query.where(getattr(AuditLog, key) == value)
    return list(db.session.scalars(query))


def wrong_code(secret):
    """Six digits that are not a valid code for this secret right now."""
    valid = {pyotp.TOTP(secret).at(time.time() + drift) for drift in (-30, 0, 30)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


def signup(client, **overrides):
    data = {"account_name": "Acme Bakery", "name": "Ann Baker", "email": "ann@acme.example", "password": PASSWORD}
    data.update(overrides)
    return client.post("/signup", data=data)


def manual_key(response):
    match = re.search(r'id="manual-key">([A-Z2-7 ]+)</code>', response.get_data(as_text=True))
    assert match, "the enrolment page shows the key for typing in by hand"
    return match.group(1).replace(" ", "")


def recovery_codes(response):
    return re.findall(r"<li>([0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4})</li>", response.get_data(as_text=True))


def test_a_new_user_signs_up_enrols_and_signs_in_with_a_code_and_a_recovery_code(client):
    page = client.get("/signup")
    assert page.status_code == 200
    assert "At least 12 characters" in text(page)  # the password rule is shown up front

    response = signup(client)
    assert response.status_code == 302 and response.headers["Location"] == "/security/mfa/enrol"
    assert client.get("/").headers["Location"] == "/security/mfa/enrol"  # nothing else until enrolled

    page = client.get("/security/mfa/enrol")
    assert page.status_code == 200
    assert "<svg" in text(page) and "<script>" not in text(page)
    secret = manual_key(page)
    response = client.post("/security/mfa/enrol", data={"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200
    codes = recovery_codes(response)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "only time you will see these codes" in text(response)
    security = client.get("/security")
    assert security.status_code == 200 and not set(recovery_codes(security)) & set(codes)
    assert "Regenerate recovery codes" in text(security)

    assert client.post("/logout").headers["Location"] == "/login"
    response = client.post("/login", data={"email": "ann@acme.example", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/login/mfa"
    assert client.get("/security").status_code == 302  # not signed in until the code is given
    response = client.post("/login/mfa", data={"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/security").status_code == 200

    client.post("/logout")
    client.post("/login", data={"email": "ann@acme.example", "password": PASSWORD})
    response = client.post("/login/mfa", data={"code": codes[3].upper()})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "9 recovery codes left" in text(client.get("/security", follow_redirects=True))

    client.post("/logout")
    client.post("/login", data={"email": "ann@acme.example", "password": PASSWORD})
    response = client.post("/login/mfa", data={"code": codes[3]})
    assert response.status_code == 422 and "didn't work" in text(response)
    response = client.post("/login/mfa", data={"code": wrong_code(secret)})
    assert response.status_code == 422
    assert client.get("/security").status_code == 302

    user = db.session.scalar(sa.select(User).where(User.email == "ann@acme.example"))
    assert user.role == "owner" and user.account.plan_type == "starter" and user.name == "Ann Baker"
    assert user.account.name == "Acme Bakery"
    recorded = actions(user_id=user.id)
    for action in ("account.created", "mfa.enabled", "login.succeeded", "logout", "mfa.recovery_code_used",
                   "login.failed"):
        assert action in recorded


def test_sign_up_rejects_a_weak_password_next_to_the_field_and_creates_nothing(client):
    for weak in ("Short-1!", "NoSymbolsHere123"):
        response = signup(client, password=weak)
        assert response.status_code == 422
        body = text(response)
        assert re.search(r'<p class="error" id="password-error">Password needs [^<]+</p>', body)
        assert 'value="Acme Bakery"' in body and 'value="ann@acme.example"' in body  # kept for retyping
        assert weak not in body
    assert "at least 12 characters" in text(signup(client, password="Short-1!"))
    assert "a symbol" in text(signup(client, password="NoSymbolsHere123"))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_sign_up_reports_missing_fields(client):
    response = signup(client, account_name="", email="not-an-email")
    assert response.status_code == 422
    body = text(response)
    assert 'id="account_name-error">Account name is required.' in body
    assert 'id="email-error">Must be a valid email address' in body
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 0


def test_sign_up_without_required_mfa_goes_to_the_dashboard(make_app):
    client = make_app(REQUIRE_MFA=False).test_client()
    response = signup(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_login_failure_says_the_same_thing_for_unknown_and_known_emails(client, make_account):
    _, owner = make_account()
    wrong_password = client.post("/login", data={"email": owner.email, "password": "Wrong-password-1!"})
    unknown = client.post("/login", data={"email": "ghost@nowhere.example", "password": PASSWORD})
    assert wrong_password.status_code == unknown.status_code == 422
    for response in (wrong_password, unknown):
        assert GENERIC_FAILURE in text(response)
        assert "Too many" not in text(response)
    assert text(wrong_password).replace(owner.email, "X") == text(unknown).replace("ghost@nowhere.example", "X")

    failures = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "login.failed")
                                  .order_by(AuditLog.created_at, AuditLog.id)).all()
    assert [(f.actor, f.meta["reason"]) for f in failures] == [
        (owner.email, "wrong_password"), ("ghost@nowhere.example", "unknown_email")]


def test_five_failures_lock_the_account_for_fifteen_minutes(client, make_account):
    _, owner = make_account()
    for attempt in range(4):
        response = client.post("/login", data={"email": owner.email, "password": f"Wrong-{attempt}"})
        assert GENERIC_FAILURE in text(response)
    response = client.post("/login", data={"email": owner.email, "password": "Wrong-5"})
    assert LOCKED in text(response)

    response = client.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert response.status_code == 422 and LOCKED in text(response)
    assert actions(user_id=owner.id).count("login.locked") == 1

    db.session.execute(sa.update(LoginAttempt).values(locked_until=utcnow() - dt.timedelta(minutes=1)))
    db.session.commit()  # fifteen minutes later
    response = client.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert response.headers["Location"] == "/login/mfa"
    response = client.post("/login/mfa", data={"code": totp_code(owner)})
    assert response.headers["Location"] == "/"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LoginAttempt)) == 0
    assert actions(user_id=owner.id)[-1] == "login.succeeded"


def test_wrong_mfa_codes_count_toward_the_lock(client, make_account):
    _, owner = make_account()
    client.post("/login", data={"email": owner.email, "password": PASSWORD})
    for _ in range(4):
        assert client.post("/login/mfa", data={"code": "abc"}).status_code == 422
    response = client.post("/login/mfa", data={"code": "abc"})
    assert response.headers["Location"] == "/login"
    assert LOCKED in text(client.get("/login"))
    # Neither the password nor a fresh code gets in while locked.
    response = client.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert LOCKED in text(response)
    assert "login.locked" in actions(user_id=owner.id)


def test_the_code_step_expires_after_five_minutes(client, make_account):
    _, owner = make_account()
    client.post("/login", data={"email": owner.email, "password": PASSWORD})
    with client.session_transaction() as session:
        session["pending_login"] = dict(session["pending_login"], expires=time.time() - 1)
    response = client.post("/login/mfa", data={"code": totp_code(owner)})
    assert response.headers["Location"] == "/login"
    assert "timed out" in text(client.get("/login"))
    assert client.get("/security").status_code == 302


def test_the_code_page_needs_a_password_first(client):
    assert client.get("/login/mfa").headers["Location"] == "/login"


def test_logout_ends_the_session_and_is_audited(client, make_account, login):
    _, owner = make_account()
    login(client, owner)
    assert client.get("/security").status_code == 200
    assert client.get("/logout").status_code == 405  # a link cannot sign anyone out
    response = client.post("/logout")
    assert response.headers["Location"] == "/login"
    assert "You have signed out." in text(client.get("/login"))
    assert client.get("/security").headers["Location"].startswith("/login")
    assert "logout" in actions(user_id=owner.id)


def test_an_idle_session_expires_after_thirty_minutes(client, make_account, login):
    _, owner = make_account()
    login(client, owner)
    with client.session_transaction() as session:
        session["last_active"] = time.time() - 29 * 60
    assert client.get("/security").status_code == 200  # activity keeps it alive ...
    with client.session_transaction() as session:
        session["last_active"] = time.time() - 31 * 60
    response = client.get("/security")  # ... but 31 idle minutes end it
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert "You were signed out after 30 minutes of inactivity." in text(client.get("/login"))
    assert client.get("/security").status_code == 302


def test_login_makes_the_session_permanent_and_stamps_activity(client, make_account, login):
    _, owner = make_account()
    response = login(client, owner)
    assert "Expires=" in response.headers["Set-Cookie"]
    with client.session_transaction() as session:
        assert abs(session["last_active"] - time.time()) < 60
    assert db.session.get(User, owner.id).last_seen is not None


def test_users_without_mfa_are_sent_to_enrolment_when_it_is_required(client, make_account, login):
    _, owner = make_account(mfa=False)
    response = login(client, owner)
    assert response.headers["Location"] == "/security/mfa/enrol"
    for path in ("/", "/security", "/settings/account", "/no-such-page"):
        assert client.get(path).headers.get("Location") == "/security/mfa/enrol", path
    assert client.get("/security/mfa/enrol").status_code == 200
    assert client.get("/static/js/app.js").status_code == 200
    assert client.post("/logout").headers["Location"] == "/login"


def test_mfa_gate_is_off_when_not_required(make_app, make_account, login):
    client = make_app(REQUIRE_MFA=False).test_client()
    _, owner = make_account(mfa=False)
    response = login(client, owner)
    assert response.headers["Location"] == "/"
    security = client.get("/security")
    assert security.status_code == 200 and "Set up two-factor authentication" in text(security)


def test_changing_the_password_signs_out_other_sessions_but_not_this_one(app, make_account, login):
    _, owner = make_account()
    here, elsewhere = app.test_client(), app.test_client()
    login(here, owner)
    login(elsewhere, owner)
    response = here.post("/security/password", data={"current_password": PASSWORD,
                                                      "new_password": "Another-Good-Pass-9"})
    assert response.headers["Location"] == "/security"
    assert "Password changed" in text(here.get("/security"))
    assert elsewhere.get("/security").headers["Location"].startswith("/login")
    here.post("/logout")
    assert here.post("/login", data={"email": owner.email, "password": PASSWORD}).status_code == 422
    login(here, owner, password="Another-Good-Pass-9")
    assert "password.changed" in actions(user_id=owner.id)


def test_change_password_errors_appear_next_to_the_fields(client, make_account, login):
    _, owner = make_account()
    login(client, owner)
    response = client.post("/security/password", data={"current_password": "wrong", "new_password": "x"})
    assert response.status_code == 422
    assert 'id="current_password-error">Your current password is incorrect.' in text(response)
    response = client.post("/security/password", data={"current_password": PASSWORD, "new_password": "weak"})
    assert response.status_code == 422 and 'id="new_password-error">Password needs' in text(response)


def test_a_session_version_bump_ends_existing_sessions(app, make_account, login):
    _, owner = make_account()
    client = app.test_client()
    login(client, owner)
    assert client.get("/security").status_code == 200
    user = db.session.get(User, owner.id)
    user.session_version += 1
    db.session.commit()
    assert client.get("/security").headers["Location"].startswith("/login")


def test_next_only_redirects_within_the_site(client, make_account):
    _, owner = make_account()
    for target, expected in [("/security", "/security"), ("https://evil.example/", "/"),
                             ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("javascript:alert(1)", "/")]:
        client.post("/login", data={"email": owner.email, "password": PASSWORD, "next": target})
        response = client.post("/login/mfa", data={"code": totp_code(owner)})
        assert response.headers["Location"] == expected, target
        client.post("/logout")


def test_login_required_pages_come_back_after_sign_in(client, make_account):
    _, owner = make_account()
    response = client.get("/security")
    assert response.headers["Location"].startswith("/login?next=")
    page = client.get(response.headers["Location"])
    assert 'name="next" value="/security"' in text(page)


def test_csrf_token_is_required_to_sign_in(make_app, make_account):
    app = make_app(WTF_CSRF_ENABLED=True)
    _, owner = make_account(mfa=False)
    client = app.test_client()
    response = client.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert response.status_code == 400
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    response = client.post("/login", data={"email": owner.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302


def test_a_signed_in_user_visiting_login_goes_to_the_dashboard(client, make_account, login):
    _, owner = make_account()
    login(client, owner)
    assert client.get("/login").headers["Location"] == "/"
    assert client.get("/signup").headers["Location"] == "/"


def test_htmx_requests_are_sent_to_sign_in_with_a_full_page_redirect(client, make_account, login):
    _, owner = make_account()
    assert client.get("/security", headers={"HX-Request": "true"}).headers["HX-Redirect"].startswith("/login")
    login(client, owner)
    with client.session_transaction() as session:
        session["last_active"] = time.time() - 31 * 60
    response = client.get("/security", headers={"HX-Request": "true"})
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/login"


def test_last_seen_is_updated_at_most_once_a_minute(client, make_account, login):
    _, owner = make_account()
    login(client, owner)
    user = db.session.get(User, owner.id)
    recent = utcnow() - dt.timedelta(seconds=20)
    user.last_seen = recent
    db.session.commit()
    client.get("/security")
    assert db.session.get(User, owner.id).last_seen == recent
    user.last_seen = utcnow() - dt.timedelta(minutes=2)
    db.session.commit()
    client.get("/security")
    assert db.session.get(User, owner.id).last_seen > recent


def test_a_fresh_instance_sign_in_page_does_not_say_welcome_back(client):
    page = client.get("/login")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Welcome back" not in body and "Sign in to NudgeCampaign" in body
