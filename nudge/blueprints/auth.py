"""Sign-up (NUDGE_SIGNUP) and email confirmation, sign-in (password + MFA challenge) with rate limits and the
per-address lockout, sign-out, idle and absolute session expiry, the MFA gate and the Security page."""
import time
import uuid
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, make_response, redirect, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from nudge import tasks
from nudge.blueprints.common import accepted, auth_rate_limits, client_ip, field_errors, render
from nudge.errors import AuthenticationFailed, Forbidden, NotFound, SignupClosed, ValidationError
from nudge.extensions import db, htmx, login_manager
from nudge.models import User
from nudge.services import auth, mfa, signup as signup_service
from nudge.services.security import PASSWORD_MIN_LENGTH, decrypt, encrypt

bp = Blueprint("auth", __name__)

# Session keys.
LAST_ACTIVE = "last_active"          # epoch seconds of the last request of a signed-in user
SIGNED_IN_AT = "signed_in_at"        # epoch seconds of the sign-in (SESSION_MAX_HOURS counts from it)
PENDING_LOGIN = "pending_login"      # {"user_id", "version", "expires", "next"} between password and code
ENROL_SECRET = "mfa_enrol_secret"    # the TOTP secret being set up, encrypted with the server key

PENDING_LOGIN_SECONDS = 5 * 60
PASSWORD_HELP = (f"At least {PASSWORD_MIN_LENGTH} characters, with upper- and lower-case letters, "
                 "a digit and a symbol.")
# What a signed-in user without MFA may reach while REQUIRE_MFA is on.
MFA_GATE_OPEN = {"auth.mfa_enrol", "auth.mfa_enrol_restart", "auth.logout", "static"}


def load_user(user_id):
    """Flask-Login's loader: "uuid:session_version"; a bumped version ends the session."""
    try:
        raw_id, version = user_id.rsplit(":", 1)
        user = db.session.get(User, uuid.UUID(raw_id))
        version = int(version)
    except (AttributeError, ValueError):
        return None
    if user is None or user.session_version != version:
        return None
    return user


# --- helpers other views use --------------------------------------------------------------------

def safe_next(target):
    """target if it is a path on this site ("/contacts?page=2"), else None (no open redirects)."""
    if not target or not isinstance(target, str):
        return None
    target = target.strip()
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def _mfa_required_for(user):
    return bool(current_app.config.get("REQUIRE_MFA")) and not user.mfa_enabled


def start_session(user, next_url=None):
    """Sign the user in on this browser and answer with where they go next.

    Makes the session permanent (idle expiry) and stamps activity; does not audit (a password login
    is audited by record_login). Goes to MFA enrolment when required, else to next_url or the
    dashboard."""
    flashes = session.get("_flashes")
    session.clear()  # nothing from before sign-in carries over (a pending login, an old enrolment)
    if flashes:
        session["_flashes"] = flashes
    login_user(user)
    session.permanent = True
    session[LAST_ACTIVE] = session[SIGNED_IN_AT] = time.time()
    if _mfa_required_for(user):
        return redirect(url_for("auth.mfa_enrol"))
    return redirect(safe_next(next_url) or url_for("dashboard.index"))


def _idle_seconds():
    return current_app.permanent_session_lifetime.total_seconds()


def _max_seconds():
    return float(current_app.config.get("SESSION_MAX_HOURS") or 12) * 3600


def _session_expiry(now):
    """Why this signed-in session is over (a message), or None while it lasts."""
    last_active, signed_in_at = session.get(LAST_ACTIVE), session.get(SIGNED_IN_AT)
    if not isinstance(last_active, (int, float)) or not isinstance(signed_in_at, (int, float)):
        return "Please sign in to continue."
    if now - signed_in_at > _max_seconds():
        hours = _max_seconds() / 3600
        return f"You were signed out {hours:g} hours after signing in. Sign in again to continue."
    if now - last_active > _idle_seconds():
        return f"You were signed out after {int(_idle_seconds() // 60)} minutes of inactivity."
    return None


def _redirect(location):
    """A redirect that also works for htmx requests (which would otherwise swap the target page in)."""
    if htmx:
        response = make_response("", 204)
        response.headers["HX-Redirect"] = location
        return response
    return redirect(location)


@login_manager.unauthorized_handler
def unauthorized():
    """A signed-out visitor on a page that needs sign-in: to the login page, and back afterwards."""
    flash(login_manager.login_message, login_manager.login_message_category)
    return _to_login()


def _to_login():
    """To the login page, coming back to this page afterwards (a fragment or a POST is no place to return to)."""
    come_back = request.method == "GET" and not htmx
    return _redirect(url_for("auth.login", next=safe_next(request.full_path.rstrip("?")) if come_back else None))


def _end_session():
    logout_user()
    session.clear()


@bp.before_app_request
def guard_session():
    """Idle and absolute expiry, last-seen stamps and the REQUIRE_MFA gate for every dashboard request."""
    if request.path.startswith(("/api/", "/static/")) or request.endpoint == "static":
        return None
    if not current_user.is_authenticated:
        return None
    now = time.time()
    expired = _session_expiry(now)
    if expired:
        _end_session()
        flash(expired, "info")
        return _to_login()
    session[LAST_ACTIVE] = now
    auth.touch(current_user)
    if _mfa_required_for(current_user) and request.endpoint not in MFA_GATE_OPEN:
        flash("Set up two-factor authentication to continue. Your account requires it.", "info")
        return _redirect(url_for("auth.mfa_enrol"))
    return None


# --- sign-up ------------------------------------------------------------------------------------

def _typed_email():
    return auth.login_key(request.form.get("email"))


@bp.route("/signup", methods=["GET", "POST"])
@auth_rate_limits("signup", _typed_email, counts=accepted)  # sign-ups that mailed the address
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    if not signup_service.signup_open():
        return render("auth/signup_closed.html", message=signup_service.CLOSED_MESSAGE, status=403)
    form = {"account_name": "", "name": "", "email": ""}
    errors = {}
    if request.method == "POST":
        form = {key: request.form.get(key, "") for key in form}
        try:
            result = signup_service.sign_up(account_name=form["account_name"], email=form["email"],
                                            password=request.form.get("password", ""), owner_name=form["name"],
                                            ip=client_ip())
        except SignupClosed as exc:  # another first sign-up got there a moment before
            db.session.rollback()
            return render("auth/signup_closed.html", message=exc.message, status=403)
        except ValidationError as exc:
            db.session.rollback()
            errors = field_errors(exc)
        else:
            if signup_service.mode() == "open":
                return _check_your_email(result)
            flash("Welcome to NudgeCampaign! Your account is ready.", "success")
            return start_session(result.owner)
    return render("auth/signup.html", form=form, errors=errors, password_help=PASSWORD_HELP,
                  status=422 if errors else 200)


def _check_your_email(result):
    """Open sign-up's answer, the same whether the email was new (a confirmation link is mailed) or
    already signs in (its user is mailed a notice), so the page tells nobody which."""
    if result.owner is not None:
        tasks.mail_email_confirmation(str(result.owner.account_id))
    else:
        tasks.mail_signup_notice(result.email)
    return render("auth/signup_sent.html", email=result.email)


@bp.get("/signup/confirm/<token>")
def confirm_email(token):
    """The link in the confirmation email: the account may send from now on."""
    try:
        account = signup_service.confirm_email(token, ip=client_ip())
    except (NotFound, ValidationError) as exc:
        db.session.rollback()
        return render("errors/error.html", status=410 if isinstance(exc, ValidationError) else 404,
                      title="Link not valid", message=exc.message)
    flash(f"Thank you: {account.email} is confirmed. Your account can send emails now.", "success")
    return redirect(url_for("dashboard.index") if current_user.is_authenticated else url_for("auth.login"))


def _own_account():
    return str(current_user.account_id) if current_user.is_authenticated else None


@bp.post("/signup/confirm/resend")
@login_required
@auth_rate_limits("confirmation", _own_account, counts=None)
def resend_confirmation():
    account = current_user.account
    if signup_service.is_confirmed(account):
        flash(f"{account.email} is already confirmed.", "info")
    else:
        tasks.mail_email_confirmation(str(account.id))
        flash(f"We sent a new confirmation link to {account.email}. It works for "
              f"{current_app.config.get('EMAIL_CONFIRMATION_HOURS', 48):g} hours.", "success")
    return _redirect(safe_next(request.form.get("next")) or url_for("dashboard.index"))


# --- sign-in ------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
@auth_rate_limits("login", _typed_email)
def login():
    next_url = safe_next(request.values.get("next"))
    if current_user.is_authenticated:
        return redirect(next_url or url_for("dashboard.index"))
    email, error = "", None
    if request.method == "POST":
        email = request.form.get("email", "")
        try:
            user = auth.authenticate(email, request.form.get("password", ""), ip=client_ip())
        except AuthenticationFailed as exc:
            error = exc.message
        else:
            if user.mfa_enabled:
                session.pop(PENDING_LOGIN, None)
                session[PENDING_LOGIN] = {"user_id": str(user.id), "version": user.session_version,
                                          "expires": time.time() + PENDING_LOGIN_SECONDS, "next": next_url}
                return redirect(url_for("auth.mfa_challenge"))
            auth.record_login(user, client_ip())
            return start_session(user, next_url)
    return render("auth/login.html", email=email, error=error, next_url=next_url,
                  signup_open=signup_service.signup_open(), status=422 if error else 200)


def _pending_user():
    """The user half-way through signing in (password right, code not yet), or None if expired."""
    pending = session.get(PENDING_LOGIN)
    if not isinstance(pending, dict) or pending.get("expires", 0) < time.time():
        return None, None
    user = load_user(f"{pending.get('user_id')}:{pending.get('version')}")
    if user is None or not user.mfa_enabled:
        return None, None
    return user, pending


def _restart_login(message, category="info"):
    session.pop(PENDING_LOGIN, None)
    flash(message, category)
    return redirect(url_for("auth.login"))


def _pending_user_id():
    pending = session.get(PENDING_LOGIN)
    return str(pending.get("user_id")) if isinstance(pending, dict) else None


@bp.route("/login/mfa", methods=["GET", "POST"])
@auth_rate_limits("mfa", _pending_user_id)
def mfa_challenge():
    user, pending = _pending_user()
    if user is None:
        return _restart_login("Your sign-in timed out. Enter your email and password again.")
    error = None
    if request.method == "POST":
        # The attempt is claimed before the code is checked: parallel guesses get no extra tries.
        claimed = auth.claim_attempt(user.email, client_ip())
        if claimed is None:
            return _restart_login(auth.refuse_locked(user.email, client_ip(), user=user).message, "error")
        code = request.form.get("code", "")
        method = None
        if mfa.clean_totp_code(code):
            method = "totp" if mfa.verify_totp(user, code) else None
        elif mfa.use_recovery_code(user, code):
            method = "recovery_code"
        if method:
            auth.record_login(user, client_ip(), method=method)
            if method == "recovery_code":
                left = mfa.recovery_codes_left(user)
                message = f"You used a recovery code. {left} recovery code{'s' if left != 1 else ''} left."
                if left <= 3:
                    message += " Generate new ones on the Security page."
                flash(message, "warning" if left <= 3 else "info")
            return start_session(user, pending.get("next"))
        if auth.record_failed_attempt(user.email, client_ip(), claimed, user=user, reason="wrong_mfa_code"):
            return _restart_login(auth.lock_message(), "error")
        error = ("That code didn't work. Enter the 6-digit code from your authenticator app, "
                 "or one of your recovery codes.")
    return render("auth/mfa_challenge.html", error=error, status=422 if error else 200)


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        # Ends the session on the server too: a copy of this cookie no longer signs anyone in.
        auth.record_logout(current_user._get_current_object(), client_ip())
    _end_session()
    flash("You have signed out.", "success")
    return _redirect(url_for("auth.login"))


# --- Security page ------------------------------------------------------------------------------

def _security_page(status=200, **context):
    context.setdefault("errors", {})
    return render("auth/security.html", user=current_user,
                  require_mfa=bool(current_app.config.get("REQUIRE_MFA")),
                  recovery_codes_left=mfa.recovery_codes_left(current_user),
                  password_help=PASSWORD_HELP, status=status, **context)


@bp.get("/security")
@login_required
def security():
    return _security_page()


def _signed_in_user():
    return str(current_user.id) if current_user.is_authenticated else None


@bp.post("/security/password")
@login_required
@auth_rate_limits("password", _signed_in_user)
def change_password():
    user = current_user._get_current_object()
    try:
        auth.change_password(user, request.form.get("current_password", ""),
                             request.form.get("new_password", ""), ip=client_ip())
    except ValidationError as exc:
        db.session.rollback()
        return _security_page(422, errors=field_errors(exc), form="password")
    # The version bump ended every session of this user; keep this one.
    login_user(user)
    session[LAST_ACTIVE] = time.time()
    flash("Password changed. You were signed out everywhere else.", "success")
    return redirect(url_for("auth.security"))


@bp.route("/security/mfa/enrol", methods=["GET", "POST"])
@login_required
def mfa_enrol():
    user = current_user._get_current_object()
    if user.mfa_enabled:
        flash("Two-factor authentication is already on.", "info")
        return redirect(url_for("auth.security"))
    error = None
    if request.method == "POST":
        secret = _enrolment_secret()
        if secret is None:
            flash("The set-up expired. Scan the new QR code and try again.", "info")
            return redirect(url_for("auth.mfa_enrol"))
        try:
            codes = mfa.confirm_enrolment(user, secret, request.form.get("code", ""), ip=client_ip())
        except ValidationError as exc:
            db.session.rollback()
            error = field_errors(exc).get("code", exc.message)
        else:
            session.pop(ENROL_SECRET, None)
            return render("auth/recovery_codes.html", codes=codes, enrolled=True)
    else:
        # A reload keeps the key: an authenticator that already scanned it must still match.
        secret = _enrolment_secret()
        if secret is None:
            secret = mfa.begin_enrolment()
            session[ENROL_SECRET] = encrypt(secret)
    uri = mfa.provisioning_uri(secret, user.email)
    return render("auth/mfa_enrol.html", qr_svg=mfa.qr_svg(uri), manual_key=mfa.format_key(secret),
                  error=error, require_mfa=bool(current_app.config.get("REQUIRE_MFA")),
                  status=422 if error else 200)


@bp.post("/security/mfa/enrol/restart")
@login_required
def mfa_enrol_restart():
    """Drop the pending key on purpose; the enrolment page then shows a new one."""
    session.pop(ENROL_SECRET, None)
    flash("Here is a new key. Remove the old NudgeCampaign entry from your app and scan this one.", "info")
    return redirect(url_for("auth.mfa_enrol"))


def _enrolment_secret():
    token = session.get(ENROL_SECRET)
    if not token:
        return None
    try:
        return decrypt(token)
    except Exception:  # a key rotation or a tampered cookie: start over
        return None


@bp.post("/security/mfa/recovery-codes")
@login_required
def mfa_recovery_codes():
    user = current_user._get_current_object()
    try:
        codes = mfa.regenerate_recovery_codes(user, request.form.get("code", ""), ip=client_ip())
    except ValidationError as exc:
        db.session.rollback()
        return _security_page(422, errors=field_errors(exc), form="recovery")
    return render("auth/recovery_codes.html", codes=codes, enrolled=False)


@bp.post("/security/mfa/disable")
@login_required
def mfa_disable():
    user = current_user._get_current_object()
    try:
        mfa.disable_mfa(user, request.form.get("code", ""), ip=client_ip())
    except ValidationError as exc:
        db.session.rollback()
        return _security_page(422, errors=field_errors(exc), form="disable")
    except Forbidden as exc:
        flash(exc.message, "error")
        return redirect(url_for("auth.security"))
    login_user(user)  # turning MFA off ended the other sessions; keep this one
    session[LAST_ACTIVE] = time.time()
    flash("Two-factor authentication is off. Your other sessions were signed out.", "success")
    return redirect(url_for("auth.security"))
