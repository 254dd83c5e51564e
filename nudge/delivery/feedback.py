"""What email providers tell us after a send: bounce and complaint notifications, verified and parsed into
Feedback records (no database here; services.bounces records them).

- Amazon SES through Amazon SNS (HTTPS subscription): only the topics the operator lists
  (NUDGE_SES_SNS_TOPICS) are heard, checked before anything is fetched: anyone can create an SNS topic and
  point it at us, and its messages are validly signed by Amazon. Every SNS message is signed
  (SignatureVersion 1: RSA SHA1, 2: RSA SHA256) with a certificate served from
  https://sns.<region>.amazonaws.com. We fetch the certificate only from such a URL (over verified HTTPS),
  cache it, and check the signature over SNS's canonical string before reading anything else.
  SubscriptionConfirmation is confirmed by fetching its SubscribeURL (same host rule).
- SendGrid's Event Webhook: ECDSA P-256 over timestamp + raw body (headers
  X-Twilio-Email-Event-Webhook-Signature / -Timestamp), checked with the public key SendGrid shows
  (NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY); a timestamp more than SENDGRID_MAX_SKEW from now is refused, so a
  captured request cannot be replayed later.

All the cryptography is the `cryptography` package's.
"""
import base64
import binascii
import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

HARD = "hard"
SOFT = "soft"
COMPLAINT = "complaint"
KINDS = (HARD, SOFT, COMPLAINT)
REASON_MAX = 500
# The header every email of ours carries (services.sending), echoed back by SES when the notification
# includes the original headers.
MESSAGE_ID_HEADER = "x-nudge-message-id"


class InvalidSignatureError(Exception):
    """The notification is not signed by who it claims (403)."""


class MalformedNotification(Exception):
    """The body is not a notification we can read (400)."""


class TopicNotAllowed(InvalidSignatureError):
    """An SNS message from a topic the operator did not list in NUDGE_SES_SNS_TOPICS (403)."""


@dataclass(frozen=True)
class Feedback:
    """One bounce or complaint about one message, as a provider reported it."""
    kind: str                               # hard | soft | complaint
    provider: str                           # ses | sendgrid | smtp
    message_id: str | None = None           # our messages.id, when the provider echoes it
    provider_message_id: str | None = None  # the provider's id of the send (messages.provider_message_id)
    email: str | None = None                # the address the provider says bounced or complained
    reason: str | None = None
    notification_id: str | None = None      # the provider's id of this notification (repeats are ignored)
    header_message_id: str | None = None    # the email's Message-ID header, <campaign id.contact id@domain>


def _text(value, limit=REASON_MAX):
    return " ".join(str(value).split())[:limit] if value not in (None, "") else None


# --------------------------------------------------------------------------------------------------
# Amazon SNS

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?$")
# arn:<partition>:sns:<region>:<12-digit account>:<topic name> (a FIFO topic's name ends in .fifo).
TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
# The fields each message type signs, in the order SNS signs them (Subject only when present).
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SIGNATURE_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


def is_sns_url(url):
    """An https URL on an SNS endpoint host (sns.<region>.amazonaws.com): where certificates and
    subscription confirmations may be fetched from, and nowhere else."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and port in (None, 443) and not parts.username and not parts.password
            and bool(SNS_HOST.match(parts.hostname or "")))


def parse_topic_arns(text):
    """NUDGE_SES_SNS_TOPICS: comma-separated SNS topic ARNs, as a frozenset (empty when unset)."""
    topics = [part.strip() for part in (text or "").split(",") if part.strip()]
    bad = [topic for topic in topics if not TOPIC_ARN.match(topic)]
    if bad:
        raise ValueError("NUDGE_SES_SNS_TOPICS: not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>): "
                         + ", ".join(bad))
    return frozenset(topics)


def fetch_url(url, timeout=10):
    """GET an SNS URL over verified HTTPS; the body's bytes (raises on an error status)."""
    import requests
    response = requests.get(url, timeout=timeout, allow_redirects=False)
    response.raise_for_status()
    return response.content


class SNS:
    """Verifies SNS messages and confirms subscriptions; `fetch(url) -> bytes` does the HTTPS GETs (tests
    pass their own). Signing certificates are cached by URL (SNS rotates them rarely)."""

    CACHE_SIZE = 32

    def __init__(self, fetch=fetch_url, clock=None):
        self.fetch = fetch
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._certificates = {}
        self._lock = threading.Lock()

    def parse(self, body, topics):
        """The verified SNS message (a dict) of a request body, from one of `topics` (ARNs); raises
        MalformedNotification, TopicNotAllowed or InvalidSignatureError.

        The topic is checked before the signature: verifying fetches a certificate, and confirming a
        subscription fetches a URL; neither is done for a topic nobody listed."""
        try:
            message = json.loads(body)
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: [[[[…]]]] nested past the stack
            raise MalformedNotification("The body is not JSON.") from exc
        if not isinstance(message, dict) or message.get("Type") not in SIGNED_FIELDS:
            raise MalformedNotification("Not an Amazon SNS message.")
        if not topics:
            raise TopicNotAllowed("Amazon SNS messages are not accepted: no topic is listed in NUDGE_SES_SNS_TOPICS.")
        if message.get("TopicArn") not in topics:
            raise TopicNotAllowed("This SNS topic is not listed in NUDGE_SES_SNS_TOPICS.")
        self.verify(message)
        return message

    def verify(self, message):
        version = str(message.get("SignatureVersion") or "")
        if version not in SIGNATURE_HASHES:
            raise InvalidSignatureError("Unsupported SNS signature version.")
        url = message.get("SigningCertURL")
        if not is_sns_url(url):
            raise InvalidSignatureError("The signing certificate is not on an Amazon SNS host.")
        try:
            signature = base64.b64decode(message.get("Signature") or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidSignatureError("The signature is not base64.") from exc
        key = self._public_key(url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), SIGNATURE_HASHES[version]())
        except InvalidSignature as exc:
            raise InvalidSignatureError("The SNS signature does not match.") from exc

    def _public_key(self, url):
        with self._lock:
            cached = self._certificates.get(url)
        now = self.clock()
        if cached is None or not _valid_at(cached, now):
            try:
                cached = x509.load_pem_x509_certificate(self.fetch(url))
            except Exception as exc:  # noqa: BLE001 - unreachable, an error status, not a certificate
                raise InvalidSignatureError("The signing certificate could not be loaded.") from exc
            if not _valid_at(cached, now) or not isinstance(cached.public_key(), rsa.RSAPublicKey):
                raise InvalidSignatureError("The signing certificate is expired or not an RSA certificate.")
            with self._lock:
                if len(self._certificates) >= self.CACHE_SIZE:
                    self._certificates.pop(next(iter(self._certificates)))
                self._certificates[url] = cached
        return cached.public_key()

    def confirm_subscription(self, message):
        """Fetch a verified SubscriptionConfirmation's SubscribeURL (only from an SNS host)."""
        url = message.get("SubscribeURL")
        if not is_sns_url(url):
            raise MalformedNotification("SubscribeURL is not on an Amazon SNS host.")
        self.fetch(url)


def _valid_at(certificate, now):
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def string_to_sign(message):
    """SNS's canonical form: "name\\nvalue\\n" for each signed field present, in SNS's order."""
    parts = []
    for name in SIGNED_FIELDS[message["Type"]]:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise MalformedNotification(f"The SNS message has no {name}.")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def ses_feedback(notification, notification_id=None):
    """Feedback records of one SES notification (the JSON in an SNS Notification's Message), identity
    notifications (notificationType) and configuration-set events (eventType) alike; [] for other types
    (Delivery, Send, Open, ...)."""
    if not isinstance(notification, dict):
        raise MalformedNotification("The SES notification is not an object.")
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") if isinstance(notification.get("mail"), dict) else {}
    ours = _header(mail.get("headers"), MESSAGE_ID_HEADER)
    provider_id = _text(mail.get("messageId"), 255)
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    header_id = _text(common.get("messageId"), 255)
    if kind == "Bounce":
        bounce = _object(notification, "bounce")
        hard = bounce.get("bounceType") == "Permanent"
        subtype = _text(bounce.get("bounceSubType"), 100)
        recipients = _recipients(bounce, "bouncedRecipients")
        return [Feedback(HARD if hard else SOFT, "ses", ours, provider_id, _text(r.get("emailAddress"), 320),
                         _text(r.get("diagnosticCode")) or _text(" ".join(filter(None, (
                             bounce.get("bounceType"), subtype, r.get("status"))))),
                         _notification_id(bounce, notification_id, r), header_id)
                for r in recipients]
    if kind == "Complaint":
        complaint = _object(notification, "complaint")
        reason = _text(complaint.get("complaintFeedbackType") or complaint.get("complaintSubType") or "complaint")
        return [Feedback(COMPLAINT, "ses", ours, provider_id, _text(r.get("emailAddress"), 320), reason,
                         _notification_id(complaint, notification_id, r), header_id)
                for r in _recipients(complaint, "complainedRecipients")]
    return []


def _object(notification, name):
    value = notification.get(name)
    if not isinstance(value, dict):
        raise MalformedNotification(f"The SES notification has no {name} object.")
    return value


def _recipients(section, name):
    recipients = section.get(name)
    if not isinstance(recipients, list) or not all(isinstance(r, dict) for r in recipients):
        raise MalformedNotification(f"The SES notification has no {name} list.")
    return recipients


def _notification_id(section, fallback, recipient):
    base = section.get("feedbackId") or fallback
    return f"{base}:{recipient.get('emailAddress')}"[:255] if base else None


def _header(headers, name):
    if not isinstance(headers, list):
        return None
    for header in headers:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == name:
            return _text(header.get("value"), 64)
    return None


# --------------------------------------------------------------------------------------------------
# SendGrid Event Webhook

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# How far a signed batch's timestamp may be from our clock, either way (SendGrid posts at once; a replay of a
# captured request is refused after this).
SENDGRID_MAX_SKEW = dt.timedelta(minutes=5)


def load_sendgrid_key(text):
    """The EC public key of NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY: base64 DER as SendGrid shows it, or PEM."""
    text = (text or "").strip()
    if not text:
        raise ValueError("empty key")
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve public key")
    return key


def verify_sendgrid(public_key, body, signature, timestamp, now=None):
    """Check SendGrid's signature over timestamp + body, and that the timestamp (Unix seconds) is within
    SENDGRID_MAX_SKEW of now (a Unix time, default the clock's); raises InvalidSignatureError."""
    if not signature or not timestamp:
        raise InvalidSignatureError("The SendGrid signature headers are missing.")
    if not _fresh(timestamp, time.time() if now is None else now):
        raise InvalidSignatureError("The SendGrid event timestamp is more than "
                                    f"{int(SENDGRID_MAX_SKEW.total_seconds() // 60)} minutes from now.")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
        public_key.verify(raw_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise InvalidSignatureError("The SendGrid signature does not match.") from exc


def _fresh(timestamp, now):
    """Whether a Unix-seconds timestamp header is within SENDGRID_MAX_SKEW of now."""
    text = timestamp.strip()
    if not text.isdigit() or len(text) > 12:
        return False
    return abs(int(text) - now) <= SENDGRID_MAX_SKEW.total_seconds()


def sendgrid_feedback(body):
    """Feedback records of a verified SendGrid event batch (a JSON array); events other than bounces,
    blocks, bounced-address drops and spam reports are skipped."""
    try:
        events = json.loads(body)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: [[[[…]]]] nested past the stack
        raise MalformedNotification("The body is not JSON.") from exc
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise MalformedNotification("A SendGrid event batch is a JSON array of objects.")
    records = []
    for event in events:
        kind = _sendgrid_kind(event)
        if kind is None:
            continue
        sg_message_id = event.get("sg_message_id")
        # sg_message_id is the mail/send response's X-Message-Id followed by ".filter…".
        provider_id = _text(str(sg_message_id).split(".", 1)[0], 255) if sg_message_id else None
        reason = event.get("reason") or event.get("response") or event.get("type") or event.get("event")
        records.append(Feedback(kind, "sendgrid", _text(event.get("nudge_message_id"), 64), provider_id,
                                _text(event.get("email"), 320), _text(reason),
                                _text(event.get("sg_event_id"), 255)))
    return records


def _sendgrid_kind(event):
    name = event.get("event")
    if name == "bounce":
        return SOFT if event.get("type") == "blocked" else HARD
    if name == "dropped":
        return HARD if str(event.get("reason", "")).strip().lower() == "bounced address" else None
    if name == "spamreport":
        return COMPLAINT
    return None
