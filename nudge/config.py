"""Configuration, read only from NUDGE_* environment variables."""
import base64
import os
import secrets

from flask.sansio.scaffold import find_package

from nudge.delivery.ratelimit import parse_rate_limits
from nudge.delivery.selection import DEFAULT_BULK, DEFAULT_BULK_THRESHOLD, DEFAULT_SMALL, parse_provider_list

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


def parse_signup_mode(raw):
    """NUDGE_SIGNUP: first (default: the install's first account only), invite (closed) or open (hosted)."""
    mode = (raw or "first").strip().lower()
    if mode not in SIGNUP_MODES:
        raise ValueError(f"NUDGE_SIGNUP must be one of {', '.join(SIGNUP_MODES)} (got {raw!r})")
    return mode


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

    return {
        "INSTANCE_PATH": path,
        "SECRET_KEY": secret_key,
        "ENCRYPTION_KEYS": parse_encryption_keys(encryption_keys),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": database_engine_options(database_url),
        "REDIS_URL": redis_url,
        "BASE_URL": (environ.get("NUDGE_BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "REQUIRE_MFA": env_flag(environ.get("NUDGE_REQUIRE_MFA"), True),
        "SIGNUP": parse_signup_mode(environ.get("NUDGE_SIGNUP")),
        # Sessions: 30 minutes idle (spec section 5); refreshed on every request.
        "PERMANENT_SESSION_LIFETIME": 30 * 60,
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
        # RFC 6238 5.2: an accepted TOTP code cannot be used again (remembered in the rate-limit store).
        "MFA_REJECT_REUSED_CODES": True,
        # Parallel writer connections of a CSV import on PostgreSQL (docs/performance.md, Import).
        "IMPORT_WRITERS": 2,
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
        # Email delivery (docs/delivery.md): providers configured globally; per-account ones come from settings.
        "SMTP_URL": environ.get("NUDGE_SMTP_URL") or None,
        "SES_REGION": environ.get("NUDGE_SES_REGION") or None,
        "SES_ENDPOINT_URL": environ.get("NUDGE_SES_ENDPOINT_URL") or None,
        "SENDGRID_API_KEY": environ.get("NUDGE_SENDGRID_API_KEY") or None,
        "SENDGRID_API_URL": (environ.get("NUDGE_SENDGRID_API_URL") or "https://api.sendgrid.com").rstrip("/"),
        # The Event Webhook's verification key (SendGrid: Mail Settings → Event Webhook → Signature Verification).
        "SENDGRID_WEBHOOK_PUBLIC_KEY": environ.get("NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
        "OUTBOX_DIR": os.path.abspath(environ["NUDGE_OUTBOX_DIR"]) if environ.get("NUDGE_OUTBOX_DIR") else None,
        "BULK_THRESHOLD": int(environ.get("NUDGE_BULK_THRESHOLD") or DEFAULT_BULK_THRESHOLD),
        "PROVIDERS_SMALL": parse_provider_list(environ.get("NUDGE_PROVIDERS_SMALL"), DEFAULT_SMALL),
        "PROVIDERS_BULK": parse_provider_list(environ.get("NUDGE_PROVIDERS_BULK"), DEFAULT_BULK),
        "DOMAIN_RATE_LIMITS": parse_rate_limits(environ.get("NUDGE_DOMAIN_RATE_LIMITS")),
    }
