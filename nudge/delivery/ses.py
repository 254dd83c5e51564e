"""Amazon SES provider: SESv2 SendEmail with the raw message (our MIME, our DKIM, our headers).

Configured by NUDGE_SES_REGION plus the standard AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles: boto3's usual chain); NUDGE_SES_ENDPOINT_URL points
it at another endpoint (a local test server). boto3 is imported on first use (~40 MB, ~0.3 s), so a
worker that never sends through SES does not pay for it. botocore's own retries are off: a throttled
send comes back transient at once, so the pipeline can defer it instead of sleeping in a thread.

SES never refuses a recipient while sending (an address on its suppression list is accepted and bounced
later): its bounces and complaints arrive through Amazon SNS (blueprints/hooks.py), so no SendResult here is
a bounce. The MessageId it returns is what those notifications name (mail.messageId).
"""
from nudge.delivery.base import Backoff, Provider
from nudge.delivery.message import InvalidAddress, ascii_address

# Error codes (botocore ClientError "Code") that mean "not now" rather than "never".
TRANSIENT_CODES = {
    "TooManyRequestsException", "ThrottlingException", "Throttling", "LimitExceededException",
    "SendingPausedException", "AccountSuspendedException", "InternalFailure", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
    "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "AccessDeniedException", "ExpiredTokenException",
}
PERMANENT_CODES = {"MessageRejected", "BadRequestException", "InvalidParameterValue",
                   "MailFromDomainNotVerifiedException", "NotFoundException"}


class SESProvider(Provider):
    """Send raw messages through SESv2 (one instance per thread; the client keeps its HTTPS pool)."""
    name = "ses"

    def __init__(self, region, *, endpoint_url=None, configuration_set=None, timeout=30.0, name=None):
        if not region:
            raise ValueError("SES needs a region (NUDGE_SES_REGION)")
        self.region = region
        self.endpoint_url = endpoint_url or None
        self.configuration_set = configuration_set
        self.timeout = timeout
        if name:
            self.name = name
        self.backoff = Backoff()
        self._client = None

    def _get_client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            config = Config(retries={"total_max_attempts": 1}, connect_timeout=min(10.0, self.timeout),
                            read_timeout=self.timeout, max_pool_connections=2)
            self._client = boto3.session.Session().client(
                "sesv2", region_name=self.region, endpoint_url=self.endpoint_url, config=config)
        return self._client

    def send(self, message, raw):
        wait = self.backoff.remaining()
        if wait:
            return self.transient(f"{self.backoff.reason} (next attempt in {wait:.0f}s)", retry_after=wait)
        try:
            recipient = ascii_address(message.to_email)
            sender = ascii_address(message.sender)
        except InvalidAddress as exc:
            return self.permanent(str(exc))
        request = {"FromEmailAddress": sender, "Destination": {"ToAddresses": [recipient]},
                   "Content": {"Raw": {"Data": raw}}}
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            response = self._get_client().send_email(**request)
        except Exception as exc:    # noqa: BLE001 - send() classifies every failure, never raises
            return self._classify(exc)
        self.backoff.succeeded()
        return self.sent(response.get("MessageId"))

    def _classify(self, exc):
        from botocore.exceptions import BotoCoreError, ClientError
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code") or ""
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            text = f"SES {code or status}: {error.get('Message') or exc}"
            if code in PERMANENT_CODES:
                return self.permanent(text)
            if code in TRANSIENT_CODES or status == 429 or status >= 500:
                if code in ("AccountSuspendedException", "SendingPausedException") or status in (401, 403):
                    self.backoff.failed(text)
                return self.transient(text)
            if 400 <= status < 500:
                return self.permanent(text)
            return self.transient(text)
        if isinstance(exc, BotoCoreError):     # connection refused, timeouts, no credentials
            text = f"SES unavailable: {exc}"
            self.backoff.failed(text)
            return self.transient(text, retry_after=self.backoff.remaining())
        return self.transient(f"SES error: {exc.__class__.__name__}: {exc}")

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None
