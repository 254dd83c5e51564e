"""Mail the server sends on its own behalf (address and sender confirmations, security notices), through the
server's providers in their transactional order (NUDGE_PROVIDERS_SMALL; the outbox under `make run`), never an
account's own provider.

    result = send_system_email("ann@example.com", "Confirm your email address", text, account_id=account.id)
"""
import logging
from email.utils import parseaddr
from urllib.parse import urlsplit

from flask import current_app

from nudge.delivery import selection
from nudge.delivery.message import OutgoingMessage, compose, compose_skeleton, domain_of, new_message_id

log = logging.getLogger("nudge.system_mail")
PRODUCT = "NudgeCampaign"


def sender(config):
    """(address, display name) of the server's own mail: NUDGE_MAIL_FROM, else no-reply@ the host of
    NUDGE_BASE_URL (no-reply@localhost when that host is an IP address)."""
    name, address = parseaddr(config.get("MAIL_FROM") or "")
    if "@" not in address:
        host = urlsplit(config.get("BASE_URL") or "").hostname or "localhost"
        if host.replace(".", "").isdigit() or ":" in host:
            host = "localhost"
        address = f"no-reply@{host}"
    return address, name or PRODUCT


def send_system_email(to_email, subject, text, html="", *, account_id=None):
    """Send one message now; returns the delivery SendResult (status "sent", "transient" or "permanent").
    account_id files it under that account in the outbox, where its people can read it."""
    config = current_app.config
    from_email, from_name = sender(config)
    message = OutgoingMessage(from_email=from_email, from_name=from_name, to_email=to_email, subject=subject,
                              html=html, text=text, message_id=new_message_id(domain_of(from_email) or "localhost"),
                              headers=[("Auto-Submitted", "auto-generated")],
                              account_id=str(account_id) if account_id else None)
    sender_ = selection.FailoverSender(selection.providers_for("transactional", 1, config),
                                       selection.provider_factory(config))
    try:
        raw = compose(compose_skeleton(from_email, from_name), message) if sender_.needs_raw else None
        result = sender_.send(message, raw)
    finally:
        sender_.close()
    if result.status != "sent":
        log.warning("system mail %r to %s not sent: %s", subject, domain_of(to_email), result.error)
    return result
