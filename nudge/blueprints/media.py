"""Uploaded email images, served publicly (no login): recipients' mail clients load them."""
from flask import Blueprint, abort, send_from_directory

from nudge.errors import NotFound
from nudge.services import uploads

bp = Blueprint("media", __name__)


@bp.route("/uploads/<uuid:account_id>/<name>")
def image(account_id, name):
    try:
        folder, stored_name, content_type = uploads.stored_file(account_id, name)
    except NotFound:
        abort(404)
    response = send_from_directory(folder, stored_name, mimetype=content_type, max_age=365 * 24 * 3600)
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
