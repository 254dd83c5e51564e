"""An account's own sending settings: its email provider and credentials, its auto-pause thresholds.

Secrets (the SMTP password, the SES secret access key, the SendGrid API key) are stored
encrypted with security.encrypt (AES-256-GCM) and leave this module only to build a provider or to sign:
describe() gives the page everything else, and says which secrets are saved without ever returning them. A
blank secret field keeps the saved one.

The pipeline asks account_providers() for its provider chain (the account's own provider first, then the
server's as failover; only its own when the From is not verified where verification is required). DKIM
keys belong to the account's sending domains (services/sending_domains.py).
"""
import ipaddress
import json
import math
import re
import uuid
from urllib.parse import quote

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from flask import current_app

from nudge.delivery import selection
from nudge.delivery.destinations import REASON_WORDS, DestinationRefused
from nudge.delivery.ses import SESProvider
from nudge.delivery.smtp import ACCOUNT_SMTP_PORTS, RelayPolicy
from nudge.errors import NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Account, SendingConfig
from nudge.services import audit, permissions, security, sending_domains, usage
from nudge.services.dialect import insert as dialect_insert
from nudge.services.validation import check_choice, hostname, optional_text, validate_fields

PROVIDERS = ("", "smtp", "ses", "sendgrid")
PROVIDER_LABELS = {"": "The server's providers", "smtp": "SMTP relay", "ses": "Amazon SES", "sendgrid": "SendGrid",
                   "outbox": "Outbox folder"}
# Form field name -> key in the encrypted credentials document, per provider.
PROVIDER_FIELDS = {
    "smtp": {"smtp_host": "host", "smtp_port": "port", "smtp_tls": "tls", "smtp_username": "username",
             "smtp_password": "password"},
    "ses": {"ses_region": "region", "ses_access_key_id": "access_key_id",
            "ses_secret_access_key": "secret_access_key"},
    "sendgrid": {"sendgrid_api_key": "api_key"},
}
SECRET_FIELDS = ("smtp_password", "ses_secret_access_key", "sendgrid_api_key")
PAUSE_FIELDS = ("pause_bounce_rate", "pause_failure_rate")
FORM_FIELDS = ("provider",) + tuple(f for fields in PROVIDER_FIELDS.values() for f in fields) + PAUSE_FIELDS

SMTP_TLS_MODES = ("starttls", "ssl", "none")
SMTP_DEFAULT_PORTS = {"none": 25, "ssl": 465, "starttls": 587}
MIN_PAUSE_PERCENT, MAX_PAUSE_PERCENT = 0.1, 100.0

_SES_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_AWS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")
_NO_SPACE = re.compile(r"^\S+$")
_SENDGRID_KEY = re.compile(r"^SG\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------------------------------
# Reading

def get_settings(account_id):
    """The account's SendingConfig, or an unsaved one with the defaults (server providers)."""
    row = db.session.scalar(sa.select(SendingConfig).where(SendingConfig.account_id == account_id))
    return row if row is not None else SendingConfig(account_id=account_id, provider=None)


def _decrypt_json(token):
    """The decrypted JSON document, or None when there is none or the server's keys no longer open it."""
    if not token:
        return None
    try:
        return json.loads(security.decrypt(token))
    except (ValueError, InvalidTag):     # a rotated-away key, a tampered or damaged value
        return None


def describe(settings):
    """What the page may show: the provider, its non-secret fields, which secrets are saved, and thresholds.

    Never contains a secret: secret fields appear only in `saved_secrets` (their names)."""
    provider = settings.provider or ""
    credentials = _decrypt_json(settings.credentials_encrypted) if provider else None
    values = {"provider": provider}
    saved = set()
    for field, key in PROVIDER_FIELDS.get(provider, {}).items():
        value = (credentials or {}).get(key)
        if field in SECRET_FIELDS:
            if value:
                saved.add(field)
        else:
            values[field] = "" if value is None else str(value)
    values.update({"pause_bounce_rate": percent_text(settings.pause_bounce_rate),
                   "pause_failure_rate": percent_text(settings.pause_failure_rate)})
    return {
        "provider": provider,
        "fields": values,
        "saved_secrets": saved,
        "credentials_unreadable": bool(provider and credentials is None),
        "updated_at": settings.updated_at,
    }


def percent_text(fraction):
    """A stored fraction as the percentage the form shows ("12.5" for 0.125, "" for the default)."""
    if fraction is None:
        return ""
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".")


def default_thresholds():
    """The server's auto-pause thresholds as fractions (used when the account leaves them blank)."""
    from nudge.services import sending      # here: the pipeline imports this module
    return {"pause_bounce_rate": sending.DEFAULT_PAUSE_BOUNCE_RATE,
            "pause_failure_rate": sending.DEFAULT_PAUSE_FAILURE_RATE}


def server_providers(config):
    """[{"name", "label", "detail"}] of the providers the server's environment configures, without credentials."""
    described = []
    for name in selection.configured_providers(config):
        if name == "smtp":
            detail = _smtp_url_summary(config.get("SMTP_URL"))
        elif name == "ses":
            detail = f"region {config.get('SES_REGION')} (from NUDGE_SES_REGION)"
        elif name == "sendgrid":
            detail = "API key from NUDGE_SENDGRID_API_KEY"
        else:
            detail = ("writes each email to a folder instead of sending it"
                      + (" (NUDGE_OUTBOX_DIR)" if config.get("OUTBOX_DIR") else ""))
        described.append({"name": name, "label": PROVIDER_LABELS[name], "detail": detail})
    return described


def _smtp_url_summary(url):
    from nudge.delivery.smtp import parse_smtp_url
    try:
        parsed = parse_smtp_url(url)
    except ValueError:
        return "from NUDGE_SMTP_URL"
    tls = {"ssl": "TLS", "starttls": "STARTTLS", "none": "no TLS"}[parsed.tls]
    auth = ", with sign-in" if parsed.username else ""
    return f"{parsed.host}:{parsed.port} ({tls}{auth}; from NUDGE_SMTP_URL)"


def server_orders(config):
    """The server's provider order for small sends (tests, transactional, small campaigns) and for bulk campaigns."""
    threshold = config.get("BULK_THRESHOLD") or selection.DEFAULT_BULK_THRESHOLD
    return {"small": selection.providers_for("test", 1, config),
            "bulk": selection.providers_for("marketing", threshold, config), "threshold": threshold}


# --------------------------------------------------------------------------------------------------
# Changing

def update_settings(actor, account_id, data, *, ip=None):
    """Change the sections present in data: provider (+ its fields), thresholds (pause_*).

    Raises ValidationError with every field's problem; audit-logs "sending.updated" with the changed field
    names (never a value of a secret). Returns the saved SendingConfig."""
    permissions.require(actor, "sending:write")
    if str(actor.account_id) != str(account_id):
        raise NotFound("No such account.")
    unknown = sorted(set(data) - set(FORM_FIELDS))
    if unknown:
        raise ValidationError("Unknown fields.", [{"field": f, "issue": "Unknown field."} for f in unknown])
    current = _saved(account_id)
    checks = {}
    if "provider" in data:
        checks["provider"] = lambda: _clean_provider(data, current)
    if any(field in data for field in PAUSE_FIELDS):
        checks["pause"] = lambda: _clean_pause(data)
    if not checks:
        raise ValidationError("Nothing to change.")
    sections = validate_fields(checks)
    row = _row_for_update(account_id)
    meta = {}
    for section, apply in (("provider", _apply_provider), ("pause", _apply_pause)):
        if section in sections:
            changes = apply(row, sections[section])
            if changes:
                meta[section] = changes
    if meta:
        audit.record("sending.updated", account_id=account_id, actor=actor, ip=ip,
                     resources=[f"account:{account_id}"], meta=meta)
    db.session.commit()
    return row


def _row_for_update(account_id):
    """The account's row, created when missing (an insert that two concurrent first saves cannot both do)."""
    db.session.execute(dialect_insert(SendingConfig).values(id=uuid.uuid4(), account_id=account_id)
                       .on_conflict_do_nothing())
    return db.session.scalar(sa.select(SendingConfig).where(SendingConfig.account_id == account_id)
                             .with_for_update().execution_options(populate_existing=True))


# -- provider ---------------------------------------------------------------------------------------

def _clean_provider(data, current):
    """(provider, credentials dict, changed field names) from the form data; the stored secrets fill blanks."""
    provider = (data.get("provider") or "").strip().lower()
    check_choice(provider, PROVIDERS, "provider")
    if not provider:
        return "", None, []
    stored = {}
    if current is not None and current.provider == provider:
        stored = _decrypt_json(current.credentials_encrypted) or {}
    credentials = {"smtp": _clean_smtp, "ses": _clean_ses, "sendgrid": _clean_sendgrid}[provider](data, stored)
    changed = [field for field, key in PROVIDER_FIELDS[provider].items() if credentials.get(key) != stored.get(key)]
    return provider, credentials, changed


def _text(data, field):
    value = data.get(field)
    if value is not None and not isinstance(value, (str, int)):
        raise field_error(field, "Must be text.")
    return "" if value is None else str(value)


def _secret(data, field, stored, label, strip=True):
    """The new secret, or the stored one when the field is blank; an error when there is neither."""
    value = _text(data, field)
    if strip:
        value = value.strip()
    if value:
        if len(value) > 1000:
            raise field_error(field, f"{label} must be at most 1000 characters.")
        return value
    if stored:
        return stored
    raise field_error(field, f"Enter the {label.lower()}.")


def _host(value, field):
    """A host name (IDNA-encoded) or an IP address."""
    value = value.strip().lower().rstrip(".")
    if not value:
        raise field_error(field, "Enter the server's host name, e.g. smtp.example.com.")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    return hostname(value, field, "Enter a host name such as smtp.example.com.", min_labels=1)


def _clean_smtp(data, stored):
    """The SMTP credentials from the form. The relay must be on the public internet on a mail port (the
    account's relay is a tenant's choice: see relay_policy), and the stored password is reused only while
    the host, port, encryption and user name stay the same: otherwise anyone signed in as an admin could
    send the saved password to a server of their own."""
    tls = _text(data, "smtp_tls").strip().lower() or "starttls"
    username = _text(data, "smtp_username").strip()
    policy = relay_policy(current_app.config)
    keep_password = stored.get("password") if not _connection_changed(data, stored, tls, username) else None
    clean = validate_fields({
        "smtp_host": lambda: _host(_text(data, "smtp_host"), "smtp_host"),
        "smtp_tls": lambda: check_choice(tls, SMTP_TLS_MODES, "smtp_tls"),
        "smtp_port": lambda: _port(_text(data, "smtp_port"), tls, policy),
        "smtp_username": lambda: optional_text(username, "smtp_username", "User name", 255),
        "smtp_password": lambda: (_smtp_password(data, stored, keep_password) if username else None),
    })
    credentials = {"host": clean["smtp_host"], "port": clean["smtp_port"], "tls": tls,
                   "username": clean["smtp_username"], "password": clean["smtp_password"]}
    try:
        smtp_settings(credentials)      # the same parser as NUDGE_SMTP_URL: what it accepts, the provider can use
    except ValueError as exc:
        raise field_error("smtp_host", str(exc).replace("NUDGE_SMTP_URL", "SMTP settings"))
    _check_public_host(credentials["host"], credentials["port"], policy)
    return credentials


SMTP_CONNECTION_KEYS = ("host", "port", "tls", "username")
PASSWORD_AGAIN = ("Enter the password again: it is needed when the host, port, encryption or user name "
                  "changes.")


def _connection_changed(data, stored, tls, username):
    """Whether the form names another server or user than the stored credentials (compared as cleaned)."""
    if not stored.get("password"):
        return False
    typed = {"tls": tls, "username": username or None}
    try:
        typed["host"] = _host(_text(data, "smtp_host"), "smtp_host")
    except ValidationError:
        return True
    try:
        typed["port"] = _port(_text(data, "smtp_port"), tls, None)
    except ValidationError:
        return True
    return any(typed[key] != stored.get(key) for key in SMTP_CONNECTION_KEYS)


def _smtp_password(data, stored, keep):
    """The typed password, else the stored one when it may be kept."""
    if not _text(data, "smtp_password") and stored.get("password") and keep is None:
        raise field_error("smtp_password", PASSWORD_AGAIN)
    return _secret(data, "smtp_password", keep, "Password", strip=False)


def _port(value, tls, policy):
    value = value.strip()
    if not value:
        return SMTP_DEFAULT_PORTS.get(tls, 587)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise field_error("smtp_port", "Enter a port between 1 and 65535 (usually 587, 465 or 25).")
    refused = policy.port_refusal(int(value)) if policy else None
    if refused:
        raise field_error("smtp_port", refused[0].upper() + refused[1:] + ".")
    return int(value)


def relay_policy(config):
    """The rules an account's own SMTP relay follows (smtp.RelayPolicy): public addresses only unless
    ACCOUNT_SMTP_ALLOW_PRIVATE (relays on the operator's LAN), ports ACCOUNT_SMTP_PORTS."""
    return RelayPolicy(allow_private=bool(config.get("ACCOUNT_SMTP_ALLOW_PRIVATE")),
                       ports=tuple(config.get("ACCOUNT_SMTP_PORTS") or ACCOUNT_SMTP_PORTS))


def _check_public_host(host, port, policy):
    """A field error on smtp_host unless the host resolves to allowed addresses only (checked again at each
    connection, where it counts: DNS may answer differently later)."""
    try:
        policy.addresses(host, port)
    except DestinationRefused as exc:
        if exc.literal:
            issue = f"This is {REASON_WORDS[exc.reason]}: your relay must be reachable on the public internet."
        else:
            # The same words whether the name is unknown or points inside a private network: which internal
            # names exist is not the tenant's to learn.
            issue = ("This host name does not resolve to public internet addresses: enter your provider's "
                     "public SMTP host, e.g. smtp.example.com.")
        raise field_error("smtp_host", issue)


def smtp_url(credentials):
    """The NUDGE_SMTP_URL form of SMTP credentials (user and password percent-encoded)."""
    host = credentials["host"]
    if ":" in host:
        host = f"[{host}]"      # IPv6
    auth = ""
    if credentials.get("username"):
        auth = quote(credentials["username"], safe="") + ":" + quote(credentials.get("password") or "", safe="") + "@"
    return f"smtp://{auth}{host}:{credentials['port']}?tls={credentials['tls']}"


def smtp_settings(credentials):
    """SMTPSettings for the account's relay, through parse_smtp_url (the rules NUDGE_SMTP_URL follows)."""
    from nudge.delivery.smtp import parse_smtp_url
    return parse_smtp_url(smtp_url(credentials))


def _clean_ses(data, stored):
    region = _text(data, "ses_region").strip().lower()
    key_id = _text(data, "ses_access_key_id").strip()

    def secret():
        keep = stored.get("secret_access_key") if key_id == stored.get("access_key_id") else None
        value = _secret(data, "ses_secret_access_key", keep, "Secret access key")
        if not _NO_SPACE.match(value) or len(value) < 16:
            raise field_error("ses_secret_access_key", "A secret access key is 40 characters without spaces.")
        return value

    clean = validate_fields({
        "ses_region": lambda: _match(region, _SES_REGION, "ses_region", "Enter an AWS region such as eu-west-1."),
        "ses_access_key_id": lambda: _match(key_id, _AWS_KEY_ID, "ses_access_key_id",
                                            "Enter the access key ID, e.g. AKIAIOSFODNN7EXAMPLE."),
        "ses_secret_access_key": secret,
    })
    return {"region": clean["ses_region"], "access_key_id": clean["ses_access_key_id"],
            "secret_access_key": clean["ses_secret_access_key"]}


def _clean_sendgrid(data, stored):
    key = _secret(data, "sendgrid_api_key", stored.get("api_key"), "API key")
    _match(key, _SENDGRID_KEY, "sendgrid_api_key", "A SendGrid API key looks like SG.xxxx.yyyy.")
    return {"api_key": key}


def _match(value, pattern, field, issue):
    if not pattern.match(value):
        raise field_error(field, issue)
    return value


def _apply_provider(row, cleaned):
    provider, credentials, changed = cleaned
    switched = provider != (row.provider or "")
    row.provider = provider or None
    row.credentials_encrypted = security.encrypt(json.dumps(credentials)) if provider else None
    return {"provider": provider or "server", "fields": changed} if switched or changed else None


# -- thresholds -------------------------------------------------------------------------------------

def _rate(value, field):
    """A percentage (0.1–100) as a fraction; None (the default) when blank."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = ("" if value is None else str(value)).strip().rstrip("%").strip().replace(",", ".")
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            number = math.nan
    if not math.isfinite(number) or not MIN_PAUSE_PERCENT <= number <= MAX_PAUSE_PERCENT:
        raise field_error(field, f"Enter a percentage from {MIN_PAUSE_PERCENT:g} to {MAX_PAUSE_PERCENT:g}, "
                                 "or leave it empty for the default.")
    return round(number / 100, 6)


def _clean_pause(data):
    return validate_fields({field: (lambda f=field: _rate(data.get(f), f)) for field in PAUSE_FIELDS if field in data})


def _apply_pause(row, cleaned):
    changes = {}
    for field, value in cleaned.items():
        if getattr(row, field) != value:
            changes[field] = percent_text(value) + " %" if value is not None else "default"
        setattr(row, field, value)
    return changes or None


# --------------------------------------------------------------------------------------------------
# For the pipeline

def _saved(account_id):
    return db.session.scalar(sa.select(SendingConfig).where(SendingConfig.account_id == account_id))


def account_providers(account_id, kind, size, config, from_email=None):
    """(provider names, factory) for FailoverSender: the account's own provider first ("account-smtp", …,
    built from its decrypted credentials), then the server's chain (selection.providers_for) as failover.

    With from_email: where verified senders are required and that From is not verified, the account's own
    provider alone (the server's providers never carry an unproven From; callers refuse the send when the
    account has no provider of its own, sending_domains.require_sendable_from)."""
    server = list(selection.providers_for(kind, size, config))
    server_factory = selection.provider_factory(config)
    row = _saved(account_id)
    if row is None or not row.provider:
        return server, server_factory
    credentials = _decrypt_json(row.credentials_encrypted)
    if credentials is None:
        current_app.logger.warning("account %s: sending credentials cannot be decrypted (NUDGE_ENCRYPTION_KEYS "
                                   "changed?); using the server's providers", account_id)
        return server, server_factory
    own = f"account-{row.provider}"
    provider, settings = row.provider, dict(config)

    def factory(name):
        if name == own:
            return build_provider(provider, credentials, settings, name=own)
        return server_factory(name)
    if from_email is not None and not sending_domains.server_may_send(account_id, from_email, config):
        return [own], factory
    return [own] + server, factory


def build_provider(provider, credentials, config, name):
    """A provider instance for an account's credentials (explicit constructor arguments, never the environment)."""
    if provider == "smtp":
        from nudge.delivery.smtp import SMTPProvider
        return SMTPProvider(settings=smtp_settings(credentials), name=name, policy=relay_policy(config))
    if provider == "ses":
        return AccountSESProvider(credentials["region"], credentials["access_key_id"],
                                  credentials["secret_access_key"], endpoint_url=config.get("SES_ENDPOINT_URL"),
                                  name=name)
    if provider == "sendgrid":
        from nudge.delivery.sendgrid import SendGridProvider
        return SendGridProvider(credentials["api_key"], api_url=config.get("SENDGRID_API_URL"), name=name)
    raise ValueError(f"unknown account provider {provider!r}")


class AccountSESProvider(SESProvider):
    """SES with the account's own access key instead of the server's AWS credential chain."""

    def __init__(self, region, access_key_id, secret_access_key, **kwargs):
        super().__init__(region, **kwargs)
        self._access_key = (access_key_id, secret_access_key)

    def __repr__(self):
        return f"<AccountSESProvider {self.region} {self._access_key[0]}>"     # never the secret

    def _get_client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            # As SESProvider: botocore's retries off, so a throttled send comes back transient at once.
            config = Config(retries={"total_max_attempts": 1}, connect_timeout=min(10.0, self.timeout),
                            read_timeout=self.timeout, max_pool_connections=2)
            session = boto3.session.Session(aws_access_key_id=self._access_key[0],
                                            aws_secret_access_key=self._access_key[1])
            self._client = session.client("sesv2", region_name=self.region, endpoint_url=self.endpoint_url,
                                          config=config)
        return self._client


# --------------------------------------------------------------------------------------------------
# Test email

def sender_address(account_id):
    """(from email, from name) of the account's test email: its default sender, else its own address."""
    account = db.session.get(Account, account_id)
    return account.default_from_email or account.email, account.default_from_name or account.name


def send_test_email(actor, account_id):
    """Send one real email to the actor through the account's provider chain (DKIM-signed when configured).

    Returns {"to", "from", "status", "provider", "error", "signed"}."""
    from nudge.delivery import FailoverSender
    from nudge.delivery.message import OutgoingMessage, compose, compose_skeleton, dkim_sign, new_message_id
    permissions.require(actor, "sending:write")
    if str(actor.account_id) != str(account_id):
        raise NotFound("No such account.")
    from_email, from_name = sender_address(account_id)
    sending_domains.require_sendable_from(account_id, from_email)
    usage.claim_test_sends(db.session.get(Account, account_id), 1)
    names, factory = account_providers(account_id, "test", 1, current_app.config, from_email=from_email)
    domain = from_email.rpartition("@")[2]
    text = ("This is a test email from NudgeCampaign.\n\n"
            "It went through your sending settings; if you are reading it, they work.\n")
    html = ("<!doctype html><html><body><p>This is a test email from NudgeCampaign.</p>"
            "<p>It went through your sending settings; if you are reading it, they work.</p></body></html>")
    message = OutgoingMessage(from_email=from_email, from_name=from_name, to_email=actor.email,
                              to_name=actor.name or "", subject="NudgeCampaign test: your sending settings",
                              html=html, text=text, message_id=new_message_id(domain),
                              headers=[("X-Nudge-Test", "1")], account_id=str(account_id))
    sender = FailoverSender(names, factory)
    signing = sending_domains.dkim_for(account_id, from_email)
    try:
        raw = None
        if sender.needs_raw:
            raw = compose(compose_skeleton(from_email, from_name), message)
            if signing:
                selector, dkim_domain, pem = signing
                raw = dkim_sign(raw, selector, dkim_domain, pem)
        result = sender.send(message, raw)
    finally:
        sender.close()
    return {"to": actor.email, "from": from_email, "status": result.status, "provider": result.provider,
            "error": result.error, "signed": bool(signing and raw is not None)}
