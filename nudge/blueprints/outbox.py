"""The Outbox: with the outbox provider (the `make run` default) every email is written to a folder instead of
being sent; this page lists the account's and shows each one as its recipient would see it."""
import dataclasses

from flask import Blueprint, abort, current_app, request
from flask_login import current_user, login_required

from nudge.blueprints.common import Pagination, render, require_permission
from nudge.blueprints.templates import preview_response
from nudge.delivery import outbox, selection
from nudge.errors import NotFound
from nudge.services import tracking

bp = Blueprint("outbox", __name__)
PER_PAGE = 50


def outbox_enabled(config):
    """Whether any mail goes to the outbox folder (then the dashboard shows the Outbox)."""
    return "outbox" in selection.configured_providers(config)


def _directory():
    return selection.outbox_dir(current_app.config)


def _page_number():
    try:
        return max(1, int(request.args.get("page", 1)))
    except ValueError:
        return 1


@bp.route("/")
@login_required
@require_permission("campaigns:read")
def index():
    directory, account_id = _directory(), current_user.account.id
    page = _page_number()
    total = outbox.count_outbox(directory, account_id)
    items = outbox.list_outbox(directory, account_id, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
    return render("outbox/index.html", results=Pagination(items, total, page, PER_PAGE), directory=directory,
                  enabled=outbox_enabled(current_app.config), account=current_user.account)


def _message(name):
    try:
        return outbox.read_message(_directory(), current_user.account.id, name)
    except NotFound:
        abort(404)


@bp.route("/<name>")
@login_required
@require_permission("campaigns:read")
def show(name):
    return render("outbox/show.html", message=_as_previewed(_message(name)))


def _as_previewed(message):
    """The message as sent, but with its recipient's own pages (unsubscribe, preferences, view in browser) in the
    headers and the text part swapped for the preview ones, as in the HTML: nothing shown here acts on them."""
    inert = tracking.inert_recipient_links
    return dataclasses.replace(message, headers=[(name, inert(value)) for name, value in message.headers],
                               text=inert(message.text or ""))


@bp.route("/<name>/html")
@login_required
@require_permission("campaigns:read")
def html(name):
    """The message's HTML part for the page's sandboxed iframe, without its tracking (viewing it here is not
    the recipient opening it)."""
    html = _message(name).html
    return preview_response(tracking.without_tracking(html) if html else "<p>(This message has no HTML part.)</p>")
