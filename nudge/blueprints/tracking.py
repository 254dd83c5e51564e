"""Public tracking endpoints (no login): open pixel, click redirect, view in browser, unsubscribe page and
the RFC 8058 one-click unsubscribe. The token in the URL is the authorisation (signed per message).

The pixel and the redirect answer without writing to the database: once the response is sent, the event
is handed to the job queue (services.tracking records it), so neither a slow database nor a slow queue
slows a recipient's click."""
import base64

from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request

from nudge.models.types import utcnow
from nudge.services import tracking

bp = Blueprint("tracking", __name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0, private"
# The preferences page of a recipient's status: a contact deleted since ("removed") is offered the
# unsubscribe button, which suppresses the address.
PREFERENCES_STATE = {"unsubscribed": "unsubscribed", "removed": "confirm"}


def _ids_or_404(token):
    ids = tracking.ids_from(token)
    if ids is None:
        abort(404)
    return ids


def _client():
    return request.remote_addr, (request.user_agent.string or "")[:500]


def _enqueue_after(response, kind, message_id, **data):
    """Hand the event to the job queue once the response has gone out: the recipient's redirect or pixel
    never waits for the queue, and an unreachable queue loses the record (logged), never the redirect."""
    from nudge.tasks import record_tracking_event
    ip, user_agent = _client()
    at = utcnow().isoformat()
    app = current_app._get_current_object()

    def enqueue():
        try:
            record_tracking_event(kind, str(message_id), ip=ip, user_agent=user_agent, at=at, **data)
        except Exception:  # noqa: BLE001 - a dead queue must not break recipients' clicks
            app.logger.exception("could not queue the %s event for message %s", kind, message_id)
    response.call_on_close(enqueue)
    return response


@bp.route("/t/o/<token>.gif")
def open_pixel(token):
    ids = tracking.ids_from(token)
    response = make_response(PIXEL)
    response.headers.update({"Content-Type": "image/gif", "Cache-Control": NO_CACHE, "Pragma": "no-cache",
                             "Expires": "0"})
    return _enqueue_after(response, "open", ids[0]) if ids is not None else response


@bp.route("/t/c/<token>/<int:index>")
def click(token, index):
    message_id, campaign_id = _ids_or_404(token)
    url = tracking.link_target(campaign_id, index)
    if url is None:
        abort(404)
    response = redirect(url, code=302)
    response.headers["Cache-Control"] = NO_CACHE
    response.headers["Referrer-Policy"] = "no-referrer"
    return _enqueue_after(response, "click", message_id, url=url)


@bp.route("/t/v/<token>")
def view_in_browser(token):
    message_id, _ = _ids_or_404(token)
    html = tracking.browser_copy(message_id)
    if html is None:
        abort(404)
    from nudge.blueprints.templates import preview_response
    response = preview_response(html)
    response.headers["Content-Security-Policy"] = response.headers["Content-Security-Policy"].replace(
        "frame-ancestors 'self'", "frame-ancestors 'none'")
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@bp.route("/t/u/<token>", methods=["GET", "POST"])
def unsubscribe(token):
    """GET: a page with one button (mail scanners follow links; they must not unsubscribe anyone).
    POST: from that page, or RFC 8058 one-click from the mailbox provider (List-Unsubscribe=One-Click)."""
    message = _message_or_404(token)
    if request.method == "GET":
        state = "unsubscribed" if tracking.recipient_status(message) == "unsubscribed" else "confirm"
        return _preferences_page(token, message, state)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    ip, user_agent = _client()
    tracking.unsubscribe(message.id, source="one_click" if one_click else "link", ip=ip, user_agent=user_agent)
    if one_click:
        return "", 200
    return _preferences_page(token, message, "unsubscribed")


@bp.route("/t/p/<token>", methods=["GET", "POST"])
def preferences(token):
    """The recipient's subscription: subscribed (with an unsubscribe button) or unsubscribed (with a way
    back in, unless the address bounced, complained or was suppressed by the sender)."""
    message = _message_or_404(token)
    if request.method == "POST" and request.form.get("action") == "subscribe":
        state = "resubscribed" if tracking.resubscribe(message.id) else "cannot_resubscribe"
        return _preferences_page(token, message, state)
    return _preferences_page(token, message, PREFERENCES_STATE.get(tracking.recipient_status(message), "subscribed"))


# What the link of each preview page leads to in the email a recipient gets.
PREVIEW_PAGES = {"u": "their unsubscribe page", "p": "their email preferences", "v": "the email in their browser"}


@bp.route("/<any(u, p, v):page>/preview", methods=["GET", "POST"])
def preview(page):
    """Where the unsubscribe, preferences and view-in-browser links of every preview lead (the editor, the
    campaign's preview, test sends, the Outbox): a page that says so and changes nobody's subscription, also
    when posted to like a one-click unsubscribe."""
    response = make_response(render_template("tracking/preview.html", leads_to=PREVIEW_PAGES[page]))
    response.headers["Cache-Control"] = NO_CACHE
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _message_or_404(token):
    message_id, _ = _ids_or_404(token)
    message = tracking.message_for(message_id)
    if message is None:
        abort(404)
    return message


def _preferences_page(token, message, state):
    response = make_response(render_template(
        "tracking/unsubscribe.html", token=token, email=message.email, state=state,
        sender=tracking.sender_name(message), account=tracking.account_for(message)))
    response.headers["Cache-Control"] = NO_CACHE
    response.headers["X-Robots-Tag"] = "noindex"
    return response
