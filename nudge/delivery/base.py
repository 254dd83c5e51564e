"""The provider interface: send one composed message, get a classified result back, never an exception.

    provider.send(message, raw) -> SendResult("sent" | "transient" | "permanent", provider, ...)
    type(provider).send_each([provider, …], [(message, raw), …]) -> [SendResult, …]   (a wave: one
        message per connection; SMTP overlaps their round trips)

- sent: the provider accepted the message (provider_message_id when it gives one).
- transient: try again later or through another provider (connection refused or lost, timeouts,
  4xx replies, throttling, bad credentials or a suspended account: nothing wrong with the recipient).
- permanent: this recipient or this message will never be accepted (5xx recipient rejected, invalid
  address, content rejected); error carries the server's reason for the campaign's failed list, and
  bounce=True marks the ones that are a hard bounce of the recipient (the receiving server rejected the
  address itself), which suppress the address like a bounce notification would.

A provider instance is not thread-safe: use one per thread (PerThread below does the bookkeeping).
"""
import threading
import time
from dataclasses import dataclass

SENT = "sent"
TRANSIENT = "transient"
PERMANENT = "permanent"
STATUSES = (SENT, TRANSIENT, PERMANENT)


@dataclass(frozen=True, slots=True)
class SendResult:
    status: str
    provider: str
    provider_message_id: str | None = None
    error: str | None = None
    # Seconds the provider asked us to wait (429 Retry-After, a provider backing off), when known.
    retry_after: float | None = None
    # A permanent failure that is a hard bounce: the receiving server said this address does not take mail
    # (an SMTP 5xx to RCPT). The sending loop hands these to services.bounces.record_send_bounces.
    bounce: bool = False

    @property
    def ok(self):
        return self.status == SENT


class Provider:
    """Base class: subclasses set name and implement send(); close() releases connections."""
    name = "provider"
    # False when the provider builds its own MIME from the message (SendGrid's JSON API): the caller
    # may then pass raw=None and skip composing.
    needs_raw = True
    # True when send_each overlaps several connections' round trips (SMTP); else a wave is sent one message
    # after another, and the sending loop sends one message at a time.
    overlaps_connections = False

    def send(self, message, raw):
        raise NotImplementedError

    @staticmethod
    def send_each(providers, items):
        """send() of items[i] = (message, raw) through providers[i], in order. Providers that can overlap
        several connections' round trips (SMTP) override this."""
        return [provider.send(message, raw) for provider, (message, raw) in zip(providers, items)]

    def close(self):
        """Release connections; the provider reconnects if used again."""

    def sent(self, provider_message_id=None):
        return SendResult(SENT, self.name, provider_message_id)

    def transient(self, error, retry_after=None):
        return SendResult(TRANSIENT, self.name, error=error, retry_after=retry_after)

    def permanent(self, error, bounce=False):
        return SendResult(PERMANENT, self.name, error=error, bounce=bounce)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Backoff:
    """After a provider-level failure (cannot connect, bad credentials) fail fast for a while, doubling
    up to `maximum`, instead of paying a connect timeout per message; reset by a success."""

    def __init__(self, initial=1.0, maximum=60.0, clock=time.monotonic):
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self.delay = 0.0
        self.until = 0.0
        self.reason = None

    def failed(self, reason):
        self.delay = min(self.maximum, self.delay * 2 if self.delay else self.initial)
        self.until = self.clock() + self.delay
        self.reason = reason

    def succeeded(self):
        self.delay = 0.0
        self.until = 0.0
        self.reason = None

    def remaining(self):
        """Seconds left to wait (0 when a new attempt may be made)."""
        return max(0.0, self.until - self.clock()) if self.until else 0.0


class PerThread:
    """One provider per thread, created on first use by factory(); close_all() closes every one.

        providers = PerThread(lambda: SMTPProvider(url))
        providers.get().send(message, raw)      # in each worker thread
    """

    def __init__(self, factory):
        self.factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all = []

    def get(self):
        provider = getattr(self._local, "provider", None)
        if provider is None:
            provider = self._local.provider = self.factory()
            with self._lock:
                self._all.append(provider)
        return provider

    def close_all(self):
        with self._lock:
            providers, self._all = self._all, []
        for provider in providers:
            provider.close()
        self._local = threading.local()
