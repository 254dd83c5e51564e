"""Who an account may send as: its sending domains (proved by a DNS TXT record, each with its own DKIM key)
and single From addresses proved by a confirmation link (a sender on a free-mail domain).

    domain = add_domain(actor, "shop.example")     # publish nudge-verify=<token> at shop.example
    check_domain(actor, domain.id)                  # live DNS: the token, SPF, DKIM, DMARC
    recheck_domains()                               # daily (tasks.py): a vanished token unverifies
    require_sendable_from(account_id, "news@shop.example")   # ValidationError(from_email) when refused
    dkim_for(account_id, "news@shop.example")       # (selector, domain, PEM) of that domain's key

Verification is required (verification_required) when NUDGE_SIGNUP=open or NUDGE_REQUIRE_VERIFIED_DOMAINS=1,
and only for mail through the server's own providers: an account that sends through a provider of its own
(Settings → Sending) may use any From there, and its mail never fails over to the server's. Otherwise the
status is shown but nothing is refused. A verified domain covers its subdomains. Reply-To is never
restricted beyond its syntax.

Mail from an address at one of the account's domains is signed with that domain's key (the most specific
domain wins), verified or not yet: a signature grants nothing, and an existing key keeps signing while its
domain is being verified.
"""
import datetime as dt
import secrets

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from markupsafe import escape

from nudge.delivery import dnscheck, selection
from nudge.delivery.message import InvalidAddress, ascii_domain, dkim_public_record
from nudge.errors import Conflict, LimitExceeded, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Account, SendingConfig, SendingDomain, VerifiedSender
from nudge.models.types import utcnow
from nudge.services import audit, permissions, security, system_mail, usage
from nudge.services.validation import DNS_LABEL, as_uuid, hostname, normalize_email, validate_fields

MAX_DOMAINS = 20
MAX_SENDERS = 20
RECHECK_EVERY = dt.timedelta(hours=20)          # the daily re-check takes domains not checked for this long
RECHECK_BATCH = 500
SENDER_LINK_MAX_AGE = 3 * 24 * 3600             # seconds a confirmation link works
SENDER_RESEND_AFTER = dt.timedelta(minutes=5)   # one confirmation mail per address per this long
CONFIRM_PATH = "/settings/sending/senders/confirm/"
DKIM_GENERATED_BITS = 2048
DKIM_RSA_BITS = (1024, 4096)
MAX_PEM_LENGTH = 20_000
# The SPF include each server provider needs (the SMTP relay's is the operator's to know).
SPF_INCLUDES = {"ses": "amazonses.com", "sendgrid": "sendgrid.net"}
CHECKS = ("verify", "spf", "dkim", "dmarc")
CHECK_LABELS = {"verify": "Ownership", "spf": "SPF", "dkim": "DKIM", "dmarc": "DMARC"}


# --------------------------------------------------------------------------------------------------
# The rule

def verification_required(config=None):
    """Whether From addresses through the server's providers must be verified."""
    config = config if config is not None else current_app.config
    return config.get("SIGNUP") == "open" or bool(config.get("REQUIRE_VERIFIED_DOMAINS"))


def _from_domain(from_email):
    try:
        return ascii_domain((from_email or "").rpartition("@")[2])
    except InvalidAddress:
        return None


def _parents(domain):
    """shop.example.com -> [shop.example.com, example.com, com]: the domains that cover it."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def from_verified(account_id, from_email):
    """Whether the From is on one of the account's verified domains (or a subdomain) or a confirmed sender."""
    domain = _from_domain(from_email)
    if not from_email or domain is None:
        return False
    covered = db.session.scalar(sa.select(sa.exists().where(
        SendingDomain.account_id == account_id, SendingDomain.domain.in_(_parents(domain)),
        SendingDomain.verified_at.is_not(None))))
    if covered:
        return True
    return bool(db.session.scalar(sa.select(sa.exists().where(
        VerifiedSender.account_id == account_id, VerifiedSender.email == from_email.strip().lower(),
        VerifiedSender.confirmed_at.is_not(None)))))


def has_own_provider(account_id):
    """Whether the account sends through a provider of its own (Settings → Sending)."""
    return db.session.scalar(sa.select(SendingConfig.provider).where(SendingConfig.account_id == account_id)) \
        is not None


def server_may_send(account_id, from_email, config=None):
    """Whether the server's providers may carry mail from this From for the account."""
    return not verification_required(config) or from_verified(account_id, from_email)


def from_problem(account_id, from_email, config=None):
    """None when the From may be used; else (blocking, message): blocking where verification is required."""
    if not from_email or from_verified(account_id, from_email):
        return None
    domain = _from_domain(from_email) or from_email
    if verification_required(config):
        if has_own_provider(account_id):
            return None
        return True, (f"{from_email} is not a verified sender: verify {domain} (or this address) in "
                      "Settings → Sending before sending from it.")
    return False, (f"{from_email} is not verified. Verifying {domain} in Settings → Sending proves the mail is "
                   "yours and signs it with its own DKIM key.")


def require_sendable_from(account_id, from_email, config=None):
    """ValidationError on from_email when this From may not be used (verification required, not verified)."""
    problem = from_problem(account_id, from_email, config)
    if problem and problem[0]:
        raise field_error("from_email", problem[1])


# --------------------------------------------------------------------------------------------------
# DKIM keys

def _decrypt_text(token):
    """The decrypted text, or None when there is none or the server's keys no longer open it."""
    if not token:
        return None
    try:
        return security.decrypt(token)
    except (ValueError, InvalidTag):     # a rotated-away key, a tampered or damaged value
        return None


def _load_pem(pem):
    from cryptography.hazmat.primitives import serialization
    return serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)


def key_description(private_key_pem):
    """"RSA 2048-bit" or "Ed25519" for a PEM private key."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = _load_pem(private_key_pem)
    return f"RSA {key.key_size}-bit" if isinstance(key, rsa.RSAPrivateKey) else "Ed25519"


def generate_dkim_key():
    """A new RSA-2048 private key as PKCS#8 PEM (RSA: every receiver verifies it, Ed25519 not yet everywhere)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_GENERATED_BITS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def check_dkim_key(text):
    """The pasted key as PKCS#8 PEM, after checking it is an unencrypted RSA (1024–4096 bits) or Ed25519 key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    text = text.strip()
    if len(text) > MAX_PEM_LENGTH:
        raise field_error("dkim_private_key", "That is too long for a private key.")
    try:
        key = _load_pem(text)
    except TypeError:
        raise field_error("dkim_private_key", "This key is protected by a passphrase; paste it without one "
                                              "(openssl pkey -in key.pem -out plain.pem).")
    except (ValueError, UnsupportedAlgorithm):
        raise field_error("dkim_private_key", "This is not a PEM private key. Paste the whole key, from "
                                              "-----BEGIN … PRIVATE KEY----- to -----END … PRIVATE KEY-----.")
    if isinstance(key, rsa.RSAPrivateKey):
        if not DKIM_RSA_BITS[0] <= key.key_size <= DKIM_RSA_BITS[1]:
            raise field_error("dkim_private_key", f"This RSA key has {key.key_size} bits; DKIM needs 1024 to 4096 "
                                                  "(2048 recommended).")
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        raise field_error("dkim_private_key", "DKIM keys must be RSA or Ed25519.")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def new_selector(now=None):
    """nudgeYYYYMM: a new key gets a new selector, so rotating never breaks mail signed with the old one."""
    return f"nudge{(now or utcnow()):%Y%m}"


def dkim_record(row, pem=None):
    """(name, value) of the domain's DKIM TXT record, or None without a readable key."""
    pem = pem or _decrypt_text(row.dkim_key_encrypted)
    if not pem:
        return None
    return f"{row.dkim_selector}._domainkey.{row.domain}", dkim_public_record(pem)


def dkim_for(account_id, from_email):
    """(selector, domain, private key PEM) of the account's domain that the From is at (or under), the most
    specific one; None when there is none or its key cannot be decrypted."""
    domain = _from_domain(from_email)
    if domain is None:
        return None
    rows = db.session.scalars(sa.select(SendingDomain).where(
        SendingDomain.account_id == account_id, SendingDomain.domain.in_(_parents(domain)),
        SendingDomain.dkim_key_encrypted.is_not(None))).all()
    if not rows:
        return None
    row = max(rows, key=lambda r: len(r.domain))
    pem = _decrypt_text(row.dkim_key_encrypted)
    if pem is None:
        current_app.logger.warning("account %s: the DKIM key of %s cannot be decrypted (NUDGE_ENCRYPTION_KEYS "
                                   "changed?); sending unsigned", account_id, row.domain)
        return None
    return row.dkim_selector, row.domain, pem


def aligned(domain, from_email):
    """Whether from_email's domain is domain or one of its subdomains."""
    from_domain = _from_domain(from_email)
    return from_domain is not None and (from_domain == domain or from_domain.endswith("." + domain))


# --------------------------------------------------------------------------------------------------
# Domains

def _scoped(actor, permission):
    permissions.require(actor, permission)
    return actor.account_id


def _rows(actor, model, order_by):
    """The actor's account's rows of a model (domains or senders), after the read permission check."""
    account_id = _scoped(actor, "sending:read")
    return db.session.scalars(sa.select(model).where(model.account_id == account_id).order_by(order_by)).all()


def _row(actor, model, row_id, permission, missing):
    """One row of the actor's account; NotFound(missing) for another account's or a junk id."""
    account_id = _scoped(actor, permission)
    uid = as_uuid(row_id)
    row = db.session.scalar(sa.select(model).where(model.account_id == account_id, model.id == uid)) if uid else None
    if row is None:
        raise NotFound(missing)
    return row


def list_domains(actor):
    """The account's sending domains, by name."""
    return _rows(actor, SendingDomain, SendingDomain.domain)


def get_domain(actor, domain_id, permission="sending:read"):
    return _row(actor, SendingDomain, domain_id, permission, "No such sending domain.")


def clean_domain(value):
    """A domain as typed ("Shop.Example", "news@shop.example", "https://shop.example/") -> "shop.example"."""
    if not isinstance(value, str):
        raise field_error("domain", "Must be a domain name such as example.com.")
    text = value.strip().lower()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.rpartition("@")[2].split("/", 1)[0].rstrip(".")
    if not text:
        raise field_error("domain", "Enter the domain your emails come from, e.g. example.com.")
    return hostname(text, "domain", "Enter a domain such as example.com (the part after @ in your from address).")


def add_domain(actor, domain, *, ip=None):
    """A new, unverified sending domain with its ownership token and a new DKIM key."""
    account_id = _scoped(actor, "sending:write")
    name = clean_domain(domain)
    if db.session.scalar(sa.select(sa.exists().where(SendingDomain.account_id == account_id,
                                                     SendingDomain.domain == name))):
        raise Conflict(f"{name} is already one of your sending domains.", [{"field": "domain", "issue": "Added already."}])
    count = db.session.scalar(sa.select(sa.func.count()).select_from(SendingDomain)
                              .where(SendingDomain.account_id == account_id))
    if count >= MAX_DOMAINS:
        raise LimitExceeded(f"An account can have at most {MAX_DOMAINS} sending domains; remove one first.",
                            [{"field": "domain", "issue": f"At most {MAX_DOMAINS}."}])
    row = SendingDomain(account_id=account_id, domain=name, verify_token=secrets.token_hex(16), checks={},
                        dkim_selector=new_selector(), dkim_key_encrypted=security.encrypt(generate_dkim_key()))
    db.session.add(row)
    db.session.flush()
    audit.record("sending_domain.added", account_id=account_id, actor=actor, ip=ip,
                 resources=[f"sending_domain:{row.id}"], meta={"domain": name})
    db.session.commit()
    return row


def remove_domain(actor, domain_id, *, ip=None):
    row = get_domain(actor, domain_id, "sending:write")
    audit.record("sending_domain.removed", account_id=row.account_id, actor=actor, ip=ip,
                 resources=[f"sending_domain:{row.id}"], meta={"domain": row.domain})
    db.session.delete(row)
    db.session.commit()


def set_domain_key(actor, domain_id, data, *, ip=None):
    """Replace a domain's DKIM key: {"dkim_key_action": "generate"} or {"dkim_private_key": PEM}, with an
    optional "dkim_selector" (a new key without one gets a new dated selector)."""
    row = get_domain(actor, domain_id, "sending:write")
    pasted = (data.get("dkim_private_key") or "").strip() if isinstance(data.get("dkim_private_key"), str) else ""
    action = (data.get("dkim_key_action") or "").strip().lower() if isinstance(data.get("dkim_key_action"), str) \
        else ""
    selector_text = data.get("dkim_selector")

    def key():
        if pasted and action == "generate":
            raise field_error("dkim_private_key", "Either paste a key or generate one, not both.")
        if action == "generate":
            return generate_dkim_key()
        if pasted:
            return check_dkim_key(pasted)
        raise field_error("dkim_private_key", "Paste your private key, or generate a new one.")

    def selector():
        if selector_text in (None, ""):
            fresh = new_selector()
            # A new key never reuses the selector of the key it replaces (mail in transit still verifies).
            return fresh if fresh != row.dkim_selector else f"nudge{utcnow():%Y%m%d%H%M%S}"
        if not isinstance(selector_text, str) or not DNS_LABEL.match(selector_text.strip().lower()):
            raise field_error("dkim_selector", "Enter a selector: letters, digits and hyphens, e.g. nudge or s2025.")
        return selector_text.strip().lower()

    clean = validate_fields({"dkim_private_key": key, "dkim_selector": selector})
    row.dkim_key_encrypted = security.encrypt(clean["dkim_private_key"])
    row.dkim_selector = clean["dkim_selector"]
    row.checks = {**(row.checks or {}), "dkim": None}
    row.updated_at = utcnow()
    audit.record("sending_domain.key_changed", account_id=row.account_id, actor=actor, ip=ip,
                 resources=[f"sending_domain:{row.id}"],
                 meta={"domain": row.domain, "selector": row.dkim_selector, "key": action or "pasted"})
    db.session.commit()
    return row


def _resolver(config):
    return dnscheck.make_resolver(config.get("DNS_NAMESERVERS") or None, float(config.get("DNS_TIMEOUT") or 5))


def _spf_includes(config):
    return [SPF_INCLUDES[name] for name in selection.configured_providers(config) if name in SPF_INCLUDES]


def _run_checks(row, config, now, resolver=None):
    """Look the domain up and store what was found; returns the verification change ("verified",
    "unverified" or None). Only an answered lookup without the token unverifies (never a failed one)."""
    record = dkim_record(row)
    found = dnscheck.check_domain(resolver or _resolver(config), row.domain, token=row.verify_token,
                                  selector=row.dkim_selector, dkim_record=record[1] if record else "",
                                  spf_includes=_spf_includes(config))
    row.checks = found
    row.checked_at = now
    change = None
    status = found["verify"]["status"]
    if status == "ok" and row.verified_at is None:
        row.verified_at, change = now, "verified"
    elif status in ("missing", "wrong") and row.verified_at is not None:
        row.verified_at, change = None, "unverified"
    if change:
        audit.record(f"sending_domain.{change}", account_id=row.account_id, resources=[f"sending_domain:{row.id}"],
                     meta={"domain": row.domain}, actor_label="dns check")
    return change


def check_domain(actor, domain_id):
    """Check the domain's DNS now ("Check now"); the domain with its findings."""
    row = get_domain(actor, domain_id, "sending:write")
    _run_checks(row, current_app.config, utcnow())
    db.session.commit()
    return row


def recheck_domains(now=None, limit=RECHECK_BATCH):
    """The daily re-check: every domain not checked for RECHECK_EVERY, oldest first, one commit each.
    Returns {"checked", "verified", "unverified"}."""
    now = now or utcnow()
    config = current_app.config
    ids = db.session.scalars(sa.select(SendingDomain.id).where(
        sa.or_(SendingDomain.checked_at.is_(None), SendingDomain.checked_at <= now - RECHECK_EVERY))
        .order_by(SendingDomain.checked_at.is_not(None), SendingDomain.checked_at).limit(limit)).all()
    summary = {"checked": 0, "verified": 0, "unverified": 0}
    resolver = _resolver(config)
    for domain_id in ids:
        row = db.session.get(SendingDomain, domain_id)
        if row is None:
            continue
        change = _run_checks(row, config, now, resolver)
        db.session.commit()
        summary["checked"] += 1
        if change:
            summary[change] += 1
    return summary


def describe_domain(row):
    """What the page and the API show of a domain: status, the records to publish, the last findings."""
    pem = _decrypt_text(row.dkim_key_encrypted)
    record = dkim_record(row, pem)
    checks = row.checks or {}
    return {
        "id": str(row.id), "domain": row.domain, "verified": row.verified,
        "status": "verified" if row.verified else "pending",
        "verified_at": row.verified_at, "checked_at": row.checked_at, "created_at": row.created_at,
        "verify_record": {"type": "TXT", "name": row.domain, "value": dnscheck.VERIFY_PREFIX + row.verify_token},
        "dkim_selector": row.dkim_selector,
        "dkim_record": {"type": "TXT", "name": record[0], "value": record[1]} if record else None,
        "dkim_key": key_description(pem) if pem else None,
        "dkim_key_unreadable": bool(row.dkim_key_encrypted and pem is None),
        "checks": {name: checks.get(name) for name in CHECKS},
    }


# --------------------------------------------------------------------------------------------------
# Single verified senders

def _serializer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="nudge.verified-sender")


def list_senders(actor):
    return _rows(actor, VerifiedSender, VerifiedSender.email)


def get_sender(actor, sender_id, permission="sending:read"):
    return _row(actor, VerifiedSender, sender_id, permission, "No such sender.")


def confirm_link(row):
    token = _serializer().dumps({"id": str(row.id), "email": row.email})
    return current_app.config["BASE_URL"] + CONFIRM_PATH + token


def _mail_confirmation(row, account_name):
    link = confirm_link(row)
    text = (f"Someone using NudgeCampaign (account “{account_name}”) wants to send email from {row.email}.\n\n"
            f"If that is you, confirm it within 3 days here:\n{link}\n\n"
            "If it is not, ignore this email: nothing is sent from your address without this confirmation.\n")
    html = (f"<p>Someone using NudgeCampaign (account “{_escape(account_name)}”) wants to send email from "
            f"<strong>{_escape(row.email)}</strong>.</p><p>If that is you, confirm it within 3 days:</p>"
            f'<p><a href="{_escape(link)}">Confirm {_escape(row.email)} as a sender</a></p>'
            "<p>If it is not, ignore this email: nothing is sent from your address without this confirmation.</p>")
    result = system_mail.send_system_email(row.email, "Confirm your sender address", text, html,
                                         account_id=row.account_id)
    if result.status != "sent":
        current_app.logger.warning("sender confirmation for account %s not sent: %s", row.account_id, result.status)
    return result


def _escape(text):
    return str(escape(text))


def add_sender(actor, email, *, ip=None):
    """A single From address to verify: mails it a confirmation link (through the server's providers)."""
    account_id = _scoped(actor, "sending:write")
    address = normalize_email(email, "email").lower()
    existing = db.session.scalar(sa.select(VerifiedSender).where(VerifiedSender.account_id == account_id,
                                                                 VerifiedSender.email == address))
    if existing is not None:
        raise Conflict(f"{address} is already on your list of senders.", [{"field": "email", "issue": "Added already."}])
    count = db.session.scalar(sa.select(sa.func.count()).select_from(VerifiedSender)
                              .where(VerifiedSender.account_id == account_id))
    if count >= MAX_SENDERS:
        raise LimitExceeded(f"An account can have at most {MAX_SENDERS} single senders; verify a domain instead.",
                            [{"field": "email", "issue": f"At most {MAX_SENDERS}."}])
    # A confirmation mail counts as a test email: removing and re-adding an address cannot mail it without end.
    usage.claim_test_sends(db.session.get(Account, account_id), 1)
    row = VerifiedSender(account_id=account_id, email=address, requested_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("sender.added", account_id=account_id, actor=actor, ip=ip, resources=[f"sender:{row.id}"],
                 meta={"email": address})
    db.session.commit()
    _mail_confirmation(row, db.session.get(Account, account_id).name)
    return row


def resend_confirmation(actor, sender_id):
    """Mail the confirmation link again (at most once per SENDER_RESEND_AFTER)."""
    row = get_sender(actor, sender_id, "sending:write")
    if row.verified:
        raise Conflict(f"{row.email} is confirmed already.", [{"field": "email", "issue": "Confirmed."}])
    now = utcnow()
    if row.requested_at > now - SENDER_RESEND_AFTER:
        raise ValidationError("A confirmation link was mailed a moment ago; check the inbox (and spam folder) of "
                              f"{row.email}, or try again in a few minutes.",
                              [{"field": "email", "issue": "Mailed recently."}])
    usage.claim_test_sends(db.session.get(Account, row.account_id), 1)
    row.requested_at = now
    db.session.commit()
    _mail_confirmation(row, db.session.get(Account, row.account_id).name)
    return row


def remove_sender(actor, sender_id, *, ip=None):
    row = get_sender(actor, sender_id, "sending:write")
    audit.record("sender.removed", account_id=row.account_id, actor=actor, ip=ip, resources=[f"sender:{row.id}"],
                 meta={"email": row.email})
    db.session.delete(row)
    db.session.commit()


def sender_for_token(token):
    """The VerifiedSender a confirmation link names; ValidationError when it is expired, forged or gone."""
    try:
        data = _serializer().loads(token, max_age=SENDER_LINK_MAX_AGE)
    except SignatureExpired:
        raise ValidationError("This confirmation link has expired: ask for a new one in Settings → Sending.")
    except BadSignature:
        raise ValidationError("This confirmation link is not valid. Copy the whole link from the email.")
    uid = as_uuid(data.get("id")) if isinstance(data, dict) else None
    row = db.session.get(VerifiedSender, uid) if uid else None
    if row is None or row.email != data.get("email"):
        raise ValidationError("This address is no longer waiting for confirmation.")
    return row


def confirm_sender(token, *, ip=None):
    """Confirm the address a link was mailed to (no sign-in needed: holding the mailbox is the proof)."""
    row = sender_for_token(token)
    if row.confirmed_at is None:
        row.confirmed_at = utcnow()
        audit.record("sender.confirmed", account_id=row.account_id, ip=ip, resources=[f"sender:{row.id}"],
                     meta={"email": row.email}, actor_label=row.email)
        db.session.commit()
    return row
