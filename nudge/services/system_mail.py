"""System mail (confirmation links): one email through the server's own providers, in the transactional
order (NUDGE_PROVIDERS_SMALL), from NUDGE_MAIL_FROM; the outbox in `make run`."""
from urllib.parse import urlsplit

from flask import current_app

from nudge.delivery import selection
from nudge.delivery.message import OutgoingMessage, compose, compose_skeleton, new_message_id


def mail_from(config):
    """NUDGE_MAIL_FROM, else no-reply@ the host of NUDGE_BASE_URL (no-reply@localhost for an IP address)."""
    if config.get("MAIL_FROM"):
        return config["MAIL_FROM"]
    host = urlsplit(config.get("BASE_URL") or "").hostname or "localhost"
    if host.replace(".", "").isdigit() or ":" in host:
        host = "localhost"
    return f"no-reply@{host}"


def send_system_email(to_email, subject, text, html):
    """Send one system email now; returns the provider's SendResult (status "sent", "transient", "permanent")."""
    config = current_app.config
    from_email = mail_from(config)
    message = OutgoingMessage(from_email=from_email, from_name="NudgeCampaign", to_email=to_email, subject=subject,
                              html=html, text=text, message_id=new_message_id(from_email.rpartition("@")[2]),
                              headers=[("Auto-Submitted", "auto-generated")])
    sender = selection.FailoverSender(selection.providers_for("transactional", 1, config),
                                      selection.provider_factory(config))
    try:
        raw = compose(compose_skeleton(from_email, "NudgeCampaign"), message) if sender.needs_raw else None
        return sender.send(message, raw)
    finally:
        sender.close()
