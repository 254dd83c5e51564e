"""Delivery: compose messages, send them through providers, choose and fail over between providers.

Pure delivery, no database: the campaign pipeline records each SendResult. See docs/delivery.md.

    from nudge.delivery import OutgoingMessage, compose_skeleton, compose, providers_for, FailoverSender
"""
from nudge.delivery.base import PERMANENT, SENT, TRANSIENT, PerThread, Provider, SendResult
from nudge.delivery.message import (
    OutgoingMessage, compose, compose_message, compose_skeleton, dkim_sign, list_unsubscribe_headers, message_id_for,
    new_message_id, parse_message_id,
)
from nudge.delivery.ratelimit import DomainLimiter
from nudge.delivery.selection import (
    FailoverSender, configured_providers, make_provider, provider_factory, providers_for,
)

__all__ = [
    "PERMANENT", "SENT", "TRANSIENT", "PerThread", "Provider", "SendResult", "OutgoingMessage", "compose",
    "compose_message", "compose_skeleton", "dkim_sign", "list_unsubscribe_headers", "message_id_for",
    "new_message_id", "parse_message_id",
    "DomainLimiter", "FailoverSender", "configured_providers", "make_provider", "provider_factory",
    "providers_for",
]
