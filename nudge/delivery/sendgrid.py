"""SendGrid provider: v3 POST /v3/mail/send with JSON (SendGrid builds the MIME and signs it).

NUDGE_SENDGRID_API_KEY (Bearer) and NUDGE_SENDGRID_API_URL (default https://api.sendgrid.com). One
requests.Session per instance keeps the HTTPS connection alive between sends; use one instance per
thread. Our message id travels as custom_args["nudge_message_id"] (SendGrid echoes custom args in its
event webhook) and our headers (List-Unsubscribe, Message-ID, X-Nudge-Message-Id) as headers.

SendGrid accepts every well-formed recipient (a 400 is a malformed request, not a bounce) and reports
bounces, drops and spam reports later through its signed Event Webhook (blueprints/hooks.py), matched by
custom_args["nudge_message_id"] or the X-Message-Id kept as provider_message_id; so no SendResult here is
a bounce.
"""
from nudge.delivery.base import Backoff, Provider

DEFAULT_API_URL = "https://api.sendgrid.com"
# Headers SendGrid sets itself and refuses in "headers".
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
MESSAGE_ID_HEADER = "x-nudge-message-id"


def _address(email, name=""):
    return {"email": email, "name": name} if name else {"email": email}


def mail_send_body(message):
    """The v3 mail/send JSON document for one message."""
    headers = {"Message-ID": message.message_id}
    nudge_id = message.message_id
    for name, value in message.headers:
        if name.lower() in RESERVED_HEADERS:
            continue
        headers[name] = value
        if name.lower() == MESSAGE_ID_HEADER:
            nudge_id = value
    content = []
    if message.text:
        content.append({"type": "text/plain", "value": message.text})
    if message.html or not content:
        content.append({"type": "text/html", "value": message.html or ""})
    body = {
        "personalizations": [{"to": [_address(message.to_email, message.to_name)]}],
        "from": _address(message.from_email, message.from_name),
        "subject": message.subject,
        "content": content,
        "headers": headers,
        "custom_args": {"nudge_message_id": str(nudge_id)},
    }
    if message.reply_to:
        body["reply_to"] = _address(message.reply_to)
    return body


def _errors_text(response):
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        errors = []
    parts = [" ".join(str(e.get(key)) for key in ("field", "message") if e.get(key)) for e in errors
             if isinstance(e, dict)]
    return "; ".join(p for p in parts if p) or (response.text or "")[:300]


class SendGridProvider(Provider):
    """Send through SendGrid's v3 API over a keep-alive session (one instance per thread)."""
    name = "sendgrid"
    needs_raw = False

    def __init__(self, api_key, *, api_url=None, timeout=30.0, name=None):
        if not api_key:
            raise ValueError("SendGrid needs an API key (NUDGE_SENDGRID_API_KEY)")
        self.api_key = api_key
        self.url = (api_url or DEFAULT_API_URL).rstrip("/") + "/v3/mail/send"
        self.timeout = timeout
        if name:
            self.name = name
        self.backoff = Backoff()
        self._session = None

    def __repr__(self):
        return f"<SendGridProvider {self.url}>"     # never the key

    def _get_session(self):
        if self._session is None:
            import requests
            self._session = requests.Session()
            self._session.headers.update({"Authorization": f"Bearer {self.api_key}",
                                          "Content-Type": "application/json"})
        return self._session

    def send(self, message, raw=None):
        import requests
        wait = self.backoff.remaining()
        if wait:
            return self.transient(f"{self.backoff.reason} (next attempt in {wait:.0f}s)", retry_after=wait)
        try:
            response = self._get_session().post(self.url, json=mail_send_body(message), timeout=self.timeout)
        except requests.RequestException as exc:
            text = f"SendGrid unavailable: {exc.__class__.__name__}: {exc}"
            self.backoff.failed(text)
            return self.transient(text, retry_after=self.backoff.remaining())
        return self._classify(response)

    def _classify(self, response):
        status = response.status_code
        if status in (200, 202):
            self.backoff.succeeded()
            return self.sent(response.headers.get("X-Message-Id"))
        text = f"SendGrid {status}: {_errors_text(response)}"
        if status == 429:
            return self.transient(text, retry_after=_retry_after(response))
        if status in (401, 403):    # a bad key or an unverified sender: every message would fail alike
            self.backoff.failed(text)
            return self.transient(text, retry_after=self.backoff.remaining())
        if status == 408 or status >= 500:
            return self.transient(text)
        return self.permanent(text)

    def close(self):
        if self._session is not None:
            self._session.close()
            self._session = None


def _retry_after(response):
    """Seconds from Retry-After, or from X-RateLimit-Reset (a Unix time) as SendGrid sends it."""
    import time
    for name, relative in (("Retry-After", True), ("X-RateLimit-Reset", False)):
        value = response.headers.get(name)
        try:
            seconds = float(value) if relative else float(value) - time.time()
        except (TypeError, ValueError):
            continue
        return max(0.0, seconds)
    return None
