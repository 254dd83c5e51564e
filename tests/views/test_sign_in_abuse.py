"""Sign-in abuse (issue 14, section 3): rate limits on the sign-in forms per address and per target, the
lockout per (email, address) that a stranger cannot turn against the owner, sign-out that ends the session
on the server, and the absolute session lifetime."""
import html
import time

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import User
from nudge.services import team
from tests.conftest import PASSWORD, totp_code

LOCKED = "Too many failed attempts. Try again in 15 minutes."
GENERIC_FAILURE = "Email or password is incorrect."


def text(response):
    return html.unescape(response.get_data(as_text=True))


def client_at(app, ip):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def assert_limited(response):
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many attempts. Wait a few minutes and try again." in text(response)


def wrong_login(client, email):
    return client.post("/login", data={"email": email, "password": "Wrong-password-1!"})


# --- rate limits ---------------------------------------------------------------------------------------

def test_login_is_limited_per_address(make_app, make_account):
    app = make_app(AUTH_RATE_LIMITS={"login_ip": "3 per minute"})
    _, owner = make_account()
    guesser = client_at(app, "203.0.113.5")
    statuses = [wrong_login(guesser, f"user{n}@x.example").status_code for n in range(3)]
    assert statuses == [422, 422, 422]
    assert_limited(wrong_login(guesser, "user9@x.example"))
    # Another address is not affected.
    response = client_at(app, "198.51.100.5").post("/login", data={"email": owner.email, "password": PASSWORD})
    assert response.status_code == 302


def test_login_is_limited_per_target_account_across_addresses_counting_failures_only(make_app, make_account, login):
    app = make_app(AUTH_RATE_LIMITS={"login_account": "3 per hour"})
    _, owner = make_account()
    for n in range(3):  # the owner signs in often: successes do not count
        login(client_at(app, f"198.51.100.{n + 1}"), owner)
    for n in range(3):  # a guesser spread over three addresses
        assert wrong_login(client_at(app, f"203.0.113.{n + 1}"), owner.email.upper()).status_code == 422
    assert_limited(wrong_login(client_at(app, "203.0.113.200"), owner.email))
    # Other accounts are not affected.
    assert wrong_login(client_at(app, "203.0.113.201"), "other@x.example").status_code == 422


def test_the_mfa_step_is_limited_per_address_and_per_user(make_app, make_account):
    app = make_app(AUTH_RATE_LIMITS={"mfa_account": "2 per 15 minutes"})
    _, owner = make_account()
    client = client_at(app, "203.0.113.7")
    client.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert client.post("/login/mfa", data={"code": "000000x"}).status_code == 422
    assert client.post("/login/mfa", data={"code": "000000x"}).status_code == 422
    assert_limited(client.post("/login/mfa", data={"code": totp_code(owner)}))

    app = make_app(AUTH_RATE_LIMITS={"mfa_ip": "1 per minute"})
    client = client_at(app, "203.0.113.8")
    client.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert client.post("/login/mfa", data={"code": "000000x"}).status_code == 422
    assert_limited(client.post("/login/mfa", data={"code": totp_code(owner)}))


def test_sign_up_is_limited_per_address_and_per_email(make_app, tmp_path):
    app = make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path),
                   AUTH_RATE_LIMITS={"signup_ip": "3 per hour", "signup_account": "1 per hour"})
    data = {"account_name": "Acme", "email": "ann@acme.example", "password": PASSWORD}
    assert client_at(app, "203.0.113.9").post("/signup", data=data).status_code == 200
    # The same address again, from elsewhere: no second mail to it.
    assert_limited(client_at(app, "203.0.113.10").post("/signup", data=data))
    client = client_at(app, "203.0.113.11")
    assert client.post("/signup", data=dict(data, email="b@acme.example")).status_code == 200
    assert client.post("/signup", data=dict(data, email="c@acme.example", password="weak")).status_code == 422
    assert client.post("/signup", data=dict(data, email="d@acme.example")).status_code == 200
    assert_limited(client.post("/signup", data=dict(data, email="e@acme.example")))


def test_invitation_acceptance_is_limited_per_address_and_per_invitation(make_app, make_account):
    app = make_app(AUTH_RATE_LIMITS={"invitation_account": "2 per hour", "invitation_ip": "3 per hour"})
    _, owner = make_account()
    _, token = team.invite_member(owner, "new@team.example", "marketer")
    path = f"/settings/team/join/{token}"
    for n in range(2):
        response = client_at(app, f"203.0.113.{20 + n}").post(path, data={"name": "New", "password": "weak"})
        assert response.status_code == 422
    assert_limited(client_at(app, "203.0.113.30").post(path, data={"name": "New", "password": PASSWORD}))

    client = client_at(app, "203.0.113.40")
    for n in range(3):
        client.post(f"/settings/team/join/unknown-{n}", data={"name": "X", "password": PASSWORD})
    assert_limited(client.post("/settings/team/join/unknown-9", data={"name": "X", "password": PASSWORD}))


def test_password_change_is_limited_per_user(make_app, make_account, login):
    app = make_app(AUTH_RATE_LIMITS={"password_account": "2 per hour"})
    _, owner = make_account()
    client = client_at(app, "198.51.100.9")
    login(client, owner)
    for _ in range(2):
        response = client.post("/security/password", data={"current_password": "guess", "new_password": "x"})
        assert response.status_code == 422
    assert_limited(client.post("/security/password", data={"current_password": PASSWORD,
                                                           "new_password": "Another-Good-Pass-9"}))
    assert db.session.get(User, owner.id).password_hash == owner.password_hash


def test_password_change_is_limited_per_address(make_app, make_account, login):
    app = make_app(AUTH_RATE_LIMITS={"password_ip": "1 per hour"})
    _, owner = make_account()
    client = client_at(app, "198.51.100.10")
    login(client, owner)
    assert client.post("/security/password", data={"current_password": "guess", "new_password": "x"}).status_code == 422
    assert_limited(client.post("/security/password", data={"current_password": "guess", "new_password": "x"}))


# --- lockout -------------------------------------------------------------------------------------------

def test_a_stranger_cannot_lock_the_owner_out(app, make_account, login):
    _, owner = make_account()
    stranger = client_at(app, "203.0.113.66")
    for _ in range(4):
        assert GENERIC_FAILURE in text(wrong_login(stranger, owner.email))
    assert LOCKED in text(wrong_login(stranger, owner.email))
    response = stranger.post("/login", data={"email": owner.email, "password": PASSWORD})
    assert response.status_code == 422 and LOCKED in text(response)
    # The owner, from their own address, signs in all the same.
    login(client_at(app, "198.51.100.1"), owner)


def test_the_fifth_failure_looks_the_same_for_an_unknown_email(app, make_account):
    _, owner = make_account()
    pages = {}
    for email in (owner.email, "ghost@nowhere.example"):
        client = client_at(app, "203.0.113.67")
        for _ in range(4):
            wrong_login(client, email)
        fifth, sixth = wrong_login(client, email), client.post("/login", data={"email": email, "password": PASSWORD})
        pages[email] = [(r.status_code, text(r).replace(email, "X")) for r in (fifth, sixth)]
        assert LOCKED in pages[email][0][1] and LOCKED in pages[email][1][1]
    assert pages[owner.email] == pages["ghost@nowhere.example"]


def test_wrong_codes_from_one_address_do_not_lock_the_owner_elsewhere(app, make_account, login):
    _, owner = make_account()
    thief = client_at(app, "203.0.113.68")  # has the password, not the phone
    thief.post("/login", data={"email": owner.email, "password": PASSWORD})
    for _ in range(4):
        assert thief.post("/login/mfa", data={"code": "abc"}).status_code == 422
    assert thief.post("/login/mfa", data={"code": "abc"}).headers["Location"] == "/login"
    assert LOCKED in text(thief.get("/login"))
    login(client_at(app, "198.51.100.2"), owner)


# --- sessions ------------------------------------------------------------------------------------------

def test_sign_out_ends_the_session_on_the_server(app, make_account, login):
    _, owner = make_account()
    client = app.test_client()
    login(client, owner)
    version = owner.session_version
    stolen = client.get_cookie("session").value
    client.post("/logout")
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/security")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    db.session.expire_all()
    assert db.session.get(User, owner.id).session_version == version + 1


def test_a_session_ends_after_the_absolute_lifetime_however_active(make_app, make_account, login):
    app = make_app(SESSION_MAX_HOURS=12)
    _, owner = make_account()
    client = app.test_client()
    login(client, owner)
    with client.session_transaction() as session:
        session["signed_in_at"] = time.time() - 11.9 * 3600
        session["last_active"] = time.time()
    assert client.get("/security").status_code == 200
    with client.session_transaction() as session:
        session["signed_in_at"] = time.time() - 12.1 * 3600
        session["last_active"] = time.time()  # active a moment ago
    response = client.get("/security")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert "You were signed out 12 hours after signing in." in text(client.get("/login"))
    assert client.get("/security").status_code == 302


def test_the_absolute_lifetime_comes_from_config(make_app, make_account, login):
    app = make_app(SESSION_MAX_HOURS=1)
    _, owner = make_account()
    client = app.test_client()
    login(client, owner)
    with client.session_transaction() as session:
        session["signed_in_at"] = time.time() - 3700
    assert client.get("/security").status_code == 302
    assert db.session.scalar(sa.select(User.session_version).where(User.id == owner.id)) == owner.session_version
