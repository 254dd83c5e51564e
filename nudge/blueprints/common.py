"""Helpers every dashboard blueprint uses: fragment-or-page rendering, permission checks, form errors."""
import functools
import json

from flask import abort, make_response, render_template, request
from flask_login import current_user

from nudge.extensions import htmx


def render(page, fragment=None, status=200, **context):
    """The full page, or only its fragment when htmx asks (ARCHITECTURE.md, Dashboard)."""
    template = fragment if (fragment and htmx and not htmx.boosted) else page
    return make_response(render_template(template, **context), status)


def client_ip():
    return request.remote_addr


def require_permission(permission):
    """View decorator: 403 unless the signed-in member's role grants the permission."""
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated or not current_user.can(permission):
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorator


def field_errors(exc):
    """{field: message} from a ValidationError's details, for rendering next to inputs."""
    errors = {}
    for detail in exc.details or []:
        errors.setdefault(detail.get("field") or "_", detail.get("issue") or exc.message)
    if not errors:
        errors["_"] = exc.message
    return errors


def with_toast(response, message, level="success"):
    """Ask the page to show a toast (static/js/app.js listens for the 'toast' event)."""
    response.headers["HX-Trigger"] = json.dumps({"toast": {"message": message, "level": level}})
    return response
