"""Which providers exist, which ones a send uses in what order, and failover between them.

Spec section 3 ("Provider Selection Logic"): small campaigns and transactional mail go through the
"small" order (SendGrid first), bulk campaigns through the "bulk" order (SES first). Here:

    providers_for("marketing", 25_000, config)   -> ["ses", "sendgrid", "smtp"]  (those configured)
    sender = FailoverSender(names, provider_factory(config))
    sender.send(message, raw)     # first provider; on a transient failure the next; permanent is final

A provider exists when configured: smtp with NUDGE_SMTP_URL, ses with NUDGE_SES_REGION, sendgrid with
NUDGE_SENDGRID_API_KEY, outbox with NUDGE_OUTBOX_DIR, or when nothing else is configured (the
`make run` default). NUDGE_PROVIDERS_SMALL / NUDGE_PROVIDERS_BULK reorder or drop providers;
NUDGE_BULK_THRESHOLD (default 1000 recipients) separates small from bulk.
"""
import os

from nudge.delivery.base import TRANSIENT, SendResult

PROVIDER_NAMES = ("smtp", "ses", "sendgrid", "outbox")
KINDS = ("transactional", "test", "marketing")
DEFAULT_SMALL = ("sendgrid", "ses", "smtp", "outbox")
DEFAULT_BULK = ("ses", "sendgrid", "smtp", "outbox")
DEFAULT_BULK_THRESHOLD = 1000


def parse_provider_list(text, default):
    """("ses", "smtp") from "ses, smtp"; the default when empty; unknown names are an error."""
    names = [part.strip().lower() for part in (text or "").split(",") if part.strip()]
    unknown = [name for name in names if name not in PROVIDER_NAMES]
    if unknown:
        raise ValueError(f"unknown email provider(s) {', '.join(unknown)}; known: {', '.join(PROVIDER_NAMES)}")
    return tuple(dict.fromkeys(names)) or tuple(default)


def configured_providers(config):
    """The providers the configuration enables, in PROVIDER_NAMES order."""
    names = [name for name, key in (("smtp", "SMTP_URL"), ("ses", "SES_REGION"), ("sendgrid", "SENDGRID_API_KEY"))
             if config.get(key)]
    if config.get("OUTBOX_DIR") or not names:
        names.append("outbox")
    return names


def providers_for(kind, size, config):
    """Ordered provider names for a send of `kind` to `size` recipients (failover goes down the list).

    Transactional and test mail, and campaigns under BULK_THRESHOLD recipients, use PROVIDERS_SMALL;
    larger campaigns PROVIDERS_BULK; both filtered to the configured providers. When that leaves none
    (the order names only unconfigured ones), every configured provider in the default order.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    threshold = config.get("BULK_THRESHOLD") or DEFAULT_BULK_THRESHOLD
    small = kind != "marketing" or size < threshold
    order, default = ((config.get("PROVIDERS_SMALL"), DEFAULT_SMALL) if small
                      else (config.get("PROVIDERS_BULK"), DEFAULT_BULK))
    configured = set(configured_providers(config))
    chosen = [name for name in (order or default) if name in configured]
    return chosen or [name for name in default if name in configured]


def outbox_dir(config):
    """NUDGE_OUTBOX_DIR, else <instance>/outbox."""
    return config.get("OUTBOX_DIR") or os.path.join(config["INSTANCE_PATH"], "outbox")


def make_provider(name, config):
    """A new provider instance from the global configuration (one per thread)."""
    if name == "smtp":
        from nudge.delivery.smtp import SMTPProvider
        return SMTPProvider(config["SMTP_URL"])
    if name == "ses":
        from nudge.delivery.ses import SESProvider
        return SESProvider(config["SES_REGION"], endpoint_url=config.get("SES_ENDPOINT_URL"))
    if name == "sendgrid":
        from nudge.delivery.sendgrid import SendGridProvider
        return SendGridProvider(config["SENDGRID_API_KEY"], api_url=config.get("SENDGRID_API_URL"))
    if name == "outbox":
        from nudge.delivery.outbox import OutboxProvider
        return OutboxProvider(outbox_dir(config))
    raise ValueError(f"unknown email provider {name!r}")


def provider_factory(config):
    """factory(name) -> a new provider, for FailoverSender."""
    config = dict(config)
    return lambda name: make_provider(name, config)


class FailoverSender:
    """Send through the first provider; on a transient failure try the next. Not thread-safe (its
    providers are not): one per thread. A permanent result is final; all transient -> transient."""

    def __init__(self, provider_names, factory):
        if not provider_names:
            raise ValueError("FailoverSender needs at least one provider")
        self.names = list(provider_names)
        self.factory = factory
        self._providers = {}

    def provider(self, name):
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = self.factory(name)
        return provider

    @property
    def needs_raw(self):
        """Whether send() needs the composed bytes (False only when every provider builds its own)."""
        return any(self.provider(name).needs_raw for name in self.names)

    @property
    def overlaps_connections(self):
        """Whether the first provider sends a wave over several connections at once (SMTP)."""
        return self.provider(self.names[0]).overlaps_connections

    def send(self, message, raw):
        return send_wave([self], [(message, raw)])[0]

    def close(self):
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            provider.close()


def send_wave(senders, items):
    """FailoverSender.send of items[i] = (message, raw) through senders[i] (one sender per connection), each
    provider's sends made together (Provider.send_each: SMTP overlaps their round trips). A transient
    failure goes on to that sender's next provider; a permanent result is final; all transient -> transient."""
    results = [None] * len(items)
    errors = [[] for _ in items]
    waits = [[] for _ in items]
    pending = list(range(len(items)))
    for level in range(max((len(sender.names) for sender in senders), default=0)):
        groups = {}
        for index in pending:
            names = senders[index].names
            if level < len(names):
                provider = senders[index].provider(names[level])
                if items[index][1] is None and provider.needs_raw:
                    raise ValueError(f"provider {names[level]} needs the composed message (raw)")
                groups.setdefault(type(provider), []).append((index, provider))
        pending = []
        for kind, members in groups.items():
            outcomes = kind.send_each([provider for _, provider in members], [items[index] for index, _ in members])
            for (index, provider), result in zip(members, outcomes):
                if result.status != TRANSIENT:
                    results[index] = result
                    continue
                errors[index].append(f"{senders[index].names[level]}: {result.error}")
                if result.retry_after is not None:
                    waits[index].append(result.retry_after)
                pending.append(index)
    for index in pending:
        names = senders[index].names
        results[index] = SendResult(TRANSIENT, names[-1], error="; ".join(errors[index]),
                                    retry_after=min(waits[index]) if len(waits[index]) == len(names) else None)
    return results
