"""Per-receiving-domain rate limits: a token bucket per domain, shared by a process's sending threads.

    limiter = DomainLimiter({"gmail.com": 50, "outlook.com": 30})      # messages per second
    wait = limiter.acquire("gmail.com")     # 0.0: go ahead (a token was taken); else seconds to wait

acquire() never blocks, so a worker can defer a message (or move on to another domain) instead of
sleeping while it holds an SMTP connection. Domains without a limit are unlimited; a subdomain
(eu.gmail.com) falls under its parent's limit. The buckets live in the process: with P worker
processes each enforces the limit on its own, so divide the configured rates by P.
Configured by NUDGE_DOMAIN_RATE_LIMITS="gmail.com=50,outlook.com=30".
"""
import threading
import time


def parse_rate_limits(text):
    """{"gmail.com": 50.0, ...} from "gmail.com=50,outlook.com=30" (per second; fractions allowed)."""
    limits = {}
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        domain, _, rate = item.partition("=")
        domain = domain.strip().lower().lstrip("@").rstrip(".")
        try:
            value = float(rate)
        except ValueError:
            value = 0.0
        if not domain or "@" in domain or value <= 0:
            raise ValueError(f"NUDGE_DOMAIN_RATE_LIMITS: expected domain=messages per second, got {item!r}")
        limits[domain] = value
    return limits


class _Bucket:
    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate, capacity, now):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now


class DomainLimiter:
    """Token buckets per receiving domain; thread-safe; acquire() returns the wait, never sleeps."""

    def __init__(self, limits=None, *, burst_seconds=1.0, clock=time.monotonic):
        # A bucket holds burst_seconds worth of tokens (at least one), so a domain at 50/s may get
        # 50 messages at once after a pause, then 50 per second.
        self.limits = {domain.lower(): float(rate) for domain, rate in (limits or {}).items()}
        self.burst_seconds = burst_seconds
        self.clock = clock
        self._buckets = {}
        self._lock = threading.Lock()

    def limit_for(self, domain):
        """(limited domain, rate) governing domain, or (None, None) when it is unlimited."""
        domain = (domain or "").strip().lower().rstrip(".")
        while domain:
            rate = self.limits.get(domain)
            if rate is not None:
                return domain, rate
            domain = domain.partition(".")[2]
        return None, None

    def acquire(self, domain):
        """Take a token for one message to domain: 0.0 when taken, else seconds until one is free."""
        key, rate = self.limit_for(domain)
        if key is None:
            return 0.0
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(rate, max(1.0, rate * self.burst_seconds), now)
            else:
                bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.stamp) * bucket.rate)
                bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / bucket.rate
