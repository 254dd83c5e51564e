"""Configuration, read only from NUDGE_* environment variables."""
import base64
import os
import secrets

from flask.sansio.scaffold import find_package

from nudge.delivery.dnscheck import parse_nameservers
from nudge.delivery.feedback import parse_topic_arns
from nudge.delivery.ratelimit import parse_rate_limits
from nudge.delivery.selection import DEFAULT_BULK, DEFAULT_BULK_THRESHOLD, DEFAULT_SMALL, parse_provider_list
from nudge.delivery.smtp import ACCOUNT_SMTP_PORTS

PLANS = ("starter", "professional", "enterprise")
# Requests per minute per account; the burst allowance is twice this for 10 seconds (spec section 6).
PLAN_RATE_LIMITS = {"starter": 100, "professional": 500, "enterprise": 2000}
PLAN_EMAIL_LIMITS = {"starter": 10_000, "professional": 100_000, "enterprise": 1_000_000}
# Request bodies (docs/security.md): uploads (CSV imports, images) up to UPLOAD_MAX_BODY_BYTES; every other
# request less, so a cheap request cannot make the server read and parse megabytes. Larger is 413.
UPLOAD_MAX_BODY_BYTES = 64 * 1024 * 1024    # multipart/form-data anywhere (the app-wide MAX_CONTENT_LENGTH)
FORM_MAX_BODY_BYTES = 4 * 1024 * 1024       # dashboard forms (a 512 KB template source, URL-encoded, fits)
API_MAX_BODY_BYTES = 8 * 1024 * 1024        # API JSON and CSV bodies: room for a 10,000-contact import batch
HOOK_MAX_BODY_BYTES = 512 * 1024            # /hooks/*: an SNS message is at most 256 KB
# NUDGE_SIGNUP: who may create an account through /signup (docs/security.md).
SIGNUP_MODES = ("first", "invite", "open")
# Flask-Limiter limits on the sign-in pages (app.config["AUTH_RATE_LIMITS"] overrides any of them by name).
# "_ip" limits count every POST from one client address; "_account" limits count the failures against one
# target (the typed email, the user half-way through MFA, the invitation, the signed-in user), so a
# stranger's guesses cannot use up the owner's successful sign-ins. The per-(email, address) lockout
# (LOCKOUT_THRESHOLD failures -> LOCKOUT_MINUTES) comes on top of these.
AUTH_RATE_LIMITS = {
    "login_ip": "20 per minute;200 per hour",
    "login_account": "30 per hour",
    "mfa_ip": "20 per minute;200 per hour",
    "mfa_account": "15 per 15 minutes",
    "signup_ip": "10 per hour",
    "signup_account": "3 per hour",
    "invitation_ip": "20 per hour",
    "invitation_account": "10 per hour",
    "password_ip": "20 per hour",
    "password_account": "10 per hour",
    "confirmation_ip": "10 per hour",
    "confirmation_account": "3 per hour",
    # Team invitation mail: every invite or resend emails someone, so one account cannot use the server as a
    # mailer ("_account": invites + resends per account; "_resend": resends of one invitation).
    "invite_mail_account": "30 per hour;100 per day",
    "invite_mail_resend": "1 per minute;5 per day",
}


def default_instance_path():
    """Flask's default instance folder for the nudge package."""
    prefix, package_path = find_package("nudge")
    if prefix is None:
        return os.path.join(package_path, "instance")
    return os.path.join(prefix, "var", "nudge-instance")


def instance_path(environ=None):
    environ = os.environ if environ is None else environ
    return os.path.abspath(environ.get("NUDGE_INSTANCE_PATH") or default_instance_path())


def env_flag(value, default):
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _read_or_create(path, make):
    """Return the secret stored at path, creating it (mode 0600) on first use."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        pass
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _new_encryption_key():
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def parse_encryption_keys(raw):
    """NUDGE_ENCRYPTION_KEYS: comma-separated base64 32-byte keys, newest first (older ones only decrypt)."""
    keys = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        key = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        if len(key) != 32:
            raise ValueError("each NUDGE_ENCRYPTION_KEYS entry must be 32 bytes, base64-encoded")
        keys.append(key)
    if not keys:
        raise ValueError("NUDGE_ENCRYPTION_KEYS is empty")
    return keys


# The signing (first) tracking key's least length: tokens are public, so a short key could be guessed offline.
TRACKING_KEY_MIN_LENGTH = 16


def parse_tracking_keys(raw):
    """NUDGE_TRACKING_KEYS: comma-separated secrets of the tracking links, the first signs and all verify.
    None when unset: the links are then signed with a key derived from the secret key (as before the
    variable existed), so links already sent keep working with no configuration change."""
    if raw is None or not raw.strip():
        return None
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    if not keys:
        raise ValueError("NUDGE_TRACKING_KEYS is empty")
    if len(keys[0]) < TRACKING_KEY_MIN_LENGTH:
        raise ValueError(f"the first NUDGE_TRACKING_KEYS entry signs new links: it must be at least "
                         f"{TRACKING_KEY_MIN_LENGTH} characters (a long random string)")
    return keys


def parse_signup_mode(raw):
    """NUDGE_SIGNUP: first (default: the install's first account only), invite (closed) or open (hosted)."""
    mode = (raw or "first").strip().lower()
    if mode not in SIGNUP_MODES:
        raise ValueError(f"NUDGE_SIGNUP must be one of {', '.join(SIGNUP_MODES)} (got {raw!r})")
    return mode


def parse_ports(raw, default):
    """NUDGE_ACCOUNT_SMTP_PORTS: comma-separated TCP ports (the default when unset)."""
    parts = [part.strip() for part in (raw or "").split(",") if part.strip()]
    if not parts:
        return tuple(default)
    if not all(part.isdigit() and 1 <= int(part) <= 65535 for part in parts):
        raise ValueError(f"NUDGE_ACCOUNT_SMTP_PORTS must be comma-separated ports (got {raw!r})")
    return tuple(dict.fromkeys(int(part) for part in parts))


def normalize_database_url(url):
    """postgres:// and postgresql:// mean psycopg2 (SQLAlchemy 2.1 would pick psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


SQLITE_BUSY_TIMEOUT_SECONDS = 30


def database_engine_options(url):
    if url.startswith("postgresql"):
        # Every timestamp is stored as naive UTC; make the server's now() agree.
        # A worker's sending threads each hold a connection while they work (plus the group committer's):
        # room for `nudge worker -w 16` and more without waiting on the pool.
        return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 30,
                "connect_args": {"options": "-c timezone=UTC"}}
    if url.startswith("sqlite"):
        # SQLite has one writer at a time: wait for it up to this long (the driver's default is 5 s, which
        # a bulk change of a large list, or an import chunk beside a sending campaign, can exceed).
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    return {}


def _inside(path, folder):
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)


def check_private_dirs(config):
    """The uploads folder is served publicly (/uploads, or NUDGE_UPLOAD_URL): it must not hold import files."""
    if _inside(config["IMPORT_DIR"], config["UPLOAD_DIR"]):
        raise ValueError(f"NUDGE_UPLOAD_DIR ({config['UPLOAD_DIR']}) is served publicly and must not contain the "
                         f"folder of uploaded import files ({config['IMPORT_DIR']}); choose a folder of its own")
    return config


def load_config(environ=None):
    """Build the Flask config mapping from the environment."""
    environ = os.environ if environ is None else environ
    path = instance_path(environ)
    os.makedirs(path, exist_ok=True)

    database_url = environ.get("NUDGE_DATABASE_URL") or "sqlite:///" + os.path.join(path, "nudge.db")
    database_url = normalize_database_url(database_url)
    redis_url = environ.get("NUDGE_REDIS_URL") or None
    secret_key = environ.get("NUDGE_SECRET_KEY") or _read_or_create(
        os.path.join(path, "secret_key"), lambda: secrets.token_urlsafe(48))
    encryption_keys = environ.get("NUDGE_ENCRYPTION_KEYS") or _read_or_create(
        os.path.join(path, "encryption_keys"), _new_encryption_key)

    return check_private_dirs({
        "INSTANCE_PATH": path,
        "SECRET_KEY": secret_key,
        "ENCRYPTION_KEYS": parse_encryption_keys(encryption_keys),
        # None: derived from SECRET_KEY when used (services/tracking.py), so tests and tools that set their own
        # SECRET_KEY sign with it.
        "TRACKING_KEYS": parse_tracking_keys(environ.get("NUDGE_TRACKING_KEYS")),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": database_engine_options(database_url),
        "REDIS_URL": redis_url,
        "BASE_URL": (environ.get("NUDGE_BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "REQUIRE_MFA": env_flag(environ.get("NUDGE_REQUIRE_MFA"), True),
        "SIGNUP": parse_signup_mode(environ.get("NUDGE_SIGNUP")),
        # How long the link that confirms a signing-up owner's email address works (NUDGE_SIGNUP=open).
        "EMAIL_CONFIRMATION_HOURS": 48,
        # The sender of the server's own mail (address and sender confirmations, sign-up notices).
        "MAIL_FROM": environ.get("NUDGE_MAIL_FROM") or None,
        # Sessions: 30 minutes idle (spec section 5); refreshed on every request. A session ends after
        # SESSION_MAX_HOURS whatever the activity (a stolen cookie does not live for ever).
        "PERMANENT_SESSION_LIFETIME": 30 * 60,
        "SESSION_MAX_HOURS": float(environ.get("NUDGE_SESSION_MAX_HOURS") or 12),
        "SESSION_REFRESH_EACH_REQUEST": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": (environ.get("NUDGE_BASE_URL") or "").startswith("https://"),
        "REMEMBER_COOKIE_DURATION": 0,
        "WTF_CSRF_TIME_LIMIT": None,
        "WTF_CSRF_HEADERS": ["X-CSRFToken"],
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ACCESS_TOKEN_EXPIRES": 3600,
        "JWT_ALGORITHM": "HS256",
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_STRATEGY": "moving-window",
        "PLAN_RATE_LIMITS": dict(PLAN_RATE_LIMITS),
        # RFC 6238 5.2: an accepted TOTP code cannot be used again (remembered in Redis, else in the database).
        "MFA_REJECT_REUSED_CODES": True,
        "AUTH_RATE_LIMITS": dict(AUTH_RATE_LIMITS),
        # Parallel writer connections of a CSV import on PostgreSQL (docs/performance.md, Import).
        "IMPORT_WRITERS": 2,
        # ANALYZE the tables a bulk change (import, bulk tag/delete, ...) made stale, before it reports done
        # (PostgreSQL; services/table_stats.py). Off only to measure the difference (bench/bench_import_then_count.py).
        "ANALYZE_AFTER_BULK_CHANGES": True,
        "LOCKOUT_THRESHOLD": 5,
        "LOCKOUT_MINUTES": 15,
        "MAX_CONTENT_LENGTH": UPLOAD_MAX_BODY_BYTES,
        "FORM_MAX_CONTENT_LENGTH": FORM_MAX_BODY_BYTES,
        "API_MAX_CONTENT_LENGTH": API_MAX_BODY_BYTES,
        "HOOK_MAX_CONTENT_LENGTH": HOOK_MAX_BODY_BYTES,
        # A multipart text field up to 1 MB: room for a template source at its 512 KB cap, so the editor
        # answers with the cap's own message (Flask's default is 500 KB); 1,000 fields per multipart form.
        "MAX_FORM_MEMORY_SIZE": 1024 * 1024,
        "MAX_FORM_PARTS": 1000,
        # How many reverse proxies (nginx, a load balancer) sit in front and set X-Forwarded-*.
        "TRUSTED_PROXIES": int(environ.get("NUDGE_TRUSTED_PROXIES") or 0),
        "LOG_LEVEL": environ.get("NUDGE_LOG_LEVEL") or "INFO",
        # Sending: delivery tasks per campaign, and how old a claim must be before a worker is presumed dead.
        "SEND_WORKERS": int(environ.get("NUDGE_SEND_WORKERS") or 4),
        # SMTP connections each delivery task keeps open and sends a wave on at once (services/sending.py).
        "SEND_CONNECTIONS": int(environ.get("NUDGE_SEND_CONNECTIONS") or 0) or None,
        "SEND_CLAIM_TIMEOUT": float(environ.get("NUDGE_SEND_CLAIM_TIMEOUT") or 20),
        # Images uploaded for emails: stored on disk, served publicly (recipients' mail clients load them).
        "UPLOAD_DIR": os.path.abspath(environ.get("NUDGE_UPLOAD_DIR") or os.path.join(path, "uploads")),
        "UPLOAD_URL": (environ.get("NUDGE_UPLOAD_URL") or "").rstrip("/") or None,
        "UPLOAD_MAX_BYTES": int(float(environ.get("NUDGE_UPLOAD_MAX_MB") or 5) * 1024 * 1024),
        # Uploaded import CSVs (subscribers' data) until their import ends: private, never under UPLOAD_DIR.
        "IMPORT_DIR": os.path.join(path, "imports"),
        # Email delivery (docs/delivery.md): providers configured globally; per-account ones come from settings.
        "SMTP_URL": environ.get("NUDGE_SMTP_URL") or None,
        # An account's own SMTP relay (Settings → Sending): public addresses only unless this is on (a relay on
        # the operator's LAN), and only these ports (docs/delivery.md, Account SMTP relays).
        "ACCOUNT_SMTP_ALLOW_PRIVATE": env_flag(environ.get("NUDGE_ACCOUNT_SMTP_ALLOW_PRIVATE"), False),
        "ACCOUNT_SMTP_PORTS": parse_ports(environ.get("NUDGE_ACCOUNT_SMTP_PORTS"), ACCOUNT_SMTP_PORTS),
        "SES_REGION": environ.get("NUDGE_SES_REGION") or None,
        "SES_ENDPOINT_URL": environ.get("NUDGE_SES_ENDPOINT_URL") or None,
        "SENDGRID_API_KEY": environ.get("NUDGE_SENDGRID_API_KEY") or None,
        "SENDGRID_API_URL": (environ.get("NUDGE_SENDGRID_API_URL") or "https://api.sendgrid.com").rstrip("/"),
        # The Event Webhook's verification key (SendGrid: Mail Settings → Event Webhook → Signature Verification).
        "SENDGRID_WEBHOOK_PUBLIC_KEY": environ.get("NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
        # The SNS topics whose messages /hooks/ses accepts (SES bounce and complaint notifications); none: refused.
        "SES_SNS_TOPICS": parse_topic_arns(environ.get("NUDGE_SES_SNS_TOPICS")),
        "OUTBOX_DIR": os.path.abspath(environ["NUDGE_OUTBOX_DIR"]) if environ.get("NUDGE_OUTBOX_DIR") else None,
        "BULK_THRESHOLD": int(environ.get("NUDGE_BULK_THRESHOLD") or DEFAULT_BULK_THRESHOLD),
        "PROVIDERS_SMALL": parse_provider_list(environ.get("NUDGE_PROVIDERS_SMALL"), DEFAULT_SMALL),
        "PROVIDERS_BULK": parse_provider_list(environ.get("NUDGE_PROVIDERS_BULK"), DEFAULT_BULK),
        "DOMAIN_RATE_LIMITS": parse_rate_limits(environ.get("NUDGE_DOMAIN_RATE_LIMITS")),
        # Sending domains (services/sending_domains.py): From addresses through the server's providers must be
        # on a verified domain or verified one by one; always so when NUDGE_SIGNUP=open.
        "REQUIRE_VERIFIED_DOMAINS": env_flag(environ.get("NUDGE_REQUIRE_VERIFIED_DOMAINS"), False),
        "DNS_NAMESERVERS": parse_nameservers(environ.get("NUDGE_DNS_NAMESERVERS")),
        "DNS_TIMEOUT": float(environ.get("NUDGE_DNS_TIMEOUT") or 5),
        # Test emails an account may send an hour (campaign tests and the settings' test email together).
        "TEST_SENDS_PER_HOUR": int(environ.get("NUDGE_TEST_SENDS_PER_HOUR") or 50),
    })
