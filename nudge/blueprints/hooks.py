"""Incoming webhooks (no login, no CSRF: the provider's signature is the authorisation).

    POST /hooks/ses       Amazon SNS (HTTPS subscription) carrying SES bounce and complaint notifications,
                          from the topics listed in NUDGE_SES_SNS_TOPICS only
    POST /hooks/sendgrid  SendGrid's signed Event Webhook (signed within the last 5 minutes)

A bad or missing signature is 403, an unreadable body 400 (the API's error envelope). A notification about
a message we do not know is answered 200 and ignored, so the provider does not retry it forever. Bodies,
addresses and tokens are never logged.
"""
import logging

from flask import Blueprint, current_app, jsonify, request

from nudge.blueprints.api.errors import error_response
from nudge.delivery import feedback as provider_feedback
from nudge.delivery.feedback import InvalidSignatureError, MalformedNotification
from nudge.services import bounces
from nudge.services.validation import loads_json

bp = Blueprint("hooks", __name__)
log = logging.getLogger("nudge.hooks")
SNS_EXTENSION = "nudge.sns"


def sns():
    """This app's SNS verifier (tests put one with their own certificate fetcher in app.extensions)."""
    verifier = current_app.extensions.get(SNS_EXTENSION)
    if verifier is None:
        verifier = current_app.extensions[SNS_EXTENSION] = provider_feedback.SNS()
    return verifier


def _sendgrid_key():
    """The parsed NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY (cached per app), or None when it is not set."""
    text = current_app.config.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    if not text:
        return None
    cached = current_app.extensions.get("nudge.sendgrid_key")
    if cached is None or cached[0] != text:
        cached = current_app.extensions["nudge.sendgrid_key"] = (text, provider_feedback.load_sendgrid_key(text))
    return cached[1]


def _record(records):
    """Record each notification; the outcome counts are the response."""
    outcome = {bounces.RECORDED: 0, bounces.DUPLICATE: 0, bounces.UNKNOWN: 0}
    for record in records:
        outcome[bounces.record_feedback(record)] += 1
    return {"recorded": outcome[bounces.RECORDED], "duplicates": outcome[bounces.DUPLICATE],
            "ignored": outcome[bounces.UNKNOWN]}


def _accepted(provider, counts):
    if any(counts.values()):
        log.info("%s feedback: %d recorded, %d repeated, %d about unknown messages", provider,
                 counts["recorded"], counts["duplicates"], counts["ignored"])
    return jsonify({"data": counts}), 200


def _rejected(provider, exc):
    if isinstance(exc, InvalidSignatureError):
        log.warning("%s webhook from %s rejected: %s", provider, request.remote_addr, exc)
        return error_response(403, str(exc))
    return error_response(400, str(exc))


@bp.post("/hooks/ses")
def ses():
    """SNS posts text/plain JSON: a SubscriptionConfirmation (confirmed here), or a Notification whose
    Message is an SES Bounce or Complaint notification (other SES notifications are acknowledged).
    Only from the topics in NUDGE_SES_SNS_TOPICS: with none listed, every message is refused (403)."""
    try:
        message = sns().parse(request.get_data(), current_app.config.get("SES_SNS_TOPICS"))
        if message["Type"] == "SubscriptionConfirmation":
            return _confirm(message)
        if message["Type"] != "Notification":
            return _accepted("ses", {"recorded": 0, "duplicates": 0, "ignored": 0})
        try:
            notification = loads_json(message["Message"])
        except (TypeError, ValueError) as exc:
            raise MalformedNotification("The SNS Message is not an SES notification.") from exc
        records = provider_feedback.ses_feedback(notification, message.get("MessageId"))
    except (InvalidSignatureError, MalformedNotification) as exc:
        return _rejected("ses", exc)
    return _accepted("ses", _record(records))


def _confirm(message):
    try:
        sns().confirm_subscription(message)
    except MalformedNotification as exc:
        return error_response(400, str(exc))
    except Exception as exc:  # noqa: BLE001 - SNS sends the confirmation again; say what failed
        log.warning("could not confirm the SNS subscription to %s: %s", message.get("TopicArn"),
                    exc.__class__.__name__)
        return error_response(502, "Could not confirm the subscription with Amazon SNS; it will be retried.")
    log.info("confirmed the SNS subscription to %s", message.get("TopicArn"))
    return jsonify({"data": {"confirmed": True}}), 200


@bp.post("/hooks/sendgrid")
def sendgrid():
    """SendGrid's Event Webhook with Signed Event Webhook Requests on: bounce, dropped and spamreport
    events are recorded, the rest acknowledged."""
    try:
        key = _sendgrid_key()
    except ValueError:
        log.error("NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid EC public key")
        key = None
    if key is None:
        return error_response(403, "SendGrid events are not accepted: the verification key "
                                   "(NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY) is not set or not valid.")
    body = request.get_data()
    try:
        provider_feedback.verify_sendgrid(key, body, request.headers.get(provider_feedback.SIGNATURE_HEADER),
                                          request.headers.get(provider_feedback.TIMESTAMP_HEADER))
        records = provider_feedback.sendgrid_feedback(body)
    except (InvalidSignatureError, MalformedNotification) as exc:
        return _rejected("sendgrid", exc)
    return _accepted("sendgrid", _record(records))
