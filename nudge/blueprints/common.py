"""Helpers every dashboard blueprint uses: fragment-or-page rendering, permission checks, form errors."""
import functools
import json

from flask import abort, current_app, make_response, render_template, request
from flask_login import current_user

from nudge.config import AUTH_RATE_LIMITS
from nudge.extensions import htmx, limiter
from nudge.services.pagination import count_rows, fetch_page


def render(page, fragment=None, status=200, **context):
    """The full page, or only its fragment when htmx asks (ARCHITECTURE.md, Dashboard)."""
    # A history restore (back button after hx-push-url) also sends HX-Request but needs the whole page.
    template = fragment if (fragment and htmx and not htmx.boosted and not htmx.history_restore_request) else page
    return make_response(render_template(template, **context), status)


def client_ip():
    return request.remote_addr


TOO_MANY_ATTEMPTS = "Too many attempts. Wait a few minutes and try again."


def auth_limit(name):
    return (current_app.config.get("AUTH_RATE_LIMITS") or {}).get(name) or AUTH_RATE_LIMITS[name]


def _failed(response):
    """A sign-in form's failure: anything but a redirect (a success moves on to another page)."""
    return not (300 <= response.status_code < 400 or "HX-Redirect" in response.headers)


def accepted(response):
    """A form's POST that did its work (mailed someone): not refused (4xx)."""
    return response.status_code < 400


def auth_rate_limits(name, target_key, counts=_failed):
    """View decorator: Flask-Limiter limits on a sign-in form's POSTs (config AUTH_RATE_LIMITS).

    <name>_ip counts every POST from the client address; <name>_account counts the POSTs against one
    target (target_key(): the typed email, the invitation, the user) from any address for which
    counts(response) is true (by default the failures; None: all), so a guesser spread over many
    addresses is stopped too. Over either: 429 with Retry-After."""
    def decorator(view):
        per_ip = limiter.limit(lambda: auth_limit(f"{name}_ip"), key_func=lambda: f"ip:{client_ip()}",
                               methods=["POST"], scope=f"{name}-ip", error_message=TOO_MANY_ATTEMPTS)
        per_target = limiter.limit(lambda: auth_limit(f"{name}_account"),
                                   key_func=lambda: f"{name}:{target_key() or client_ip()}", methods=["POST"],
                                   scope=f"{name}-account", error_message=TOO_MANY_ATTEMPTS,
                                   deduct_when=counts)
        return per_ip(per_target(view))
    return decorator


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


class Pagination:
    """One page of a query's results: items, total, page, per_page, pages, has_prev/has_next."""

    def __init__(self, items, total, page, per_page):
        self.items, self.total, self.page, self.per_page = items, total, page, per_page

    @property
    def pages(self):
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self):
        return self.page > 1

    @property
    def has_next(self):
        return self.page < self.pages

    @property
    def prev_num(self):
        return self.page - 1 if self.has_prev else None

    @property
    def next_num(self):
        return self.page + 1 if self.has_next else None

    @property
    def first(self):
        """1-based position of the first item on this page (0 when there are none), for "1–50 of N"."""
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last(self):
        return (self.page - 1) * self.per_page + len(self.items)


def paginate(query, page, per_page=50):
    """Run a SQLAlchemy select for one page (1-based; junk or out-of-range pages are clamped)."""
    try:
        page = max(1, int(page or 1))
    except (TypeError, ValueError):
        page = 1
    total = count_rows(query)
    page = min(page, max(1, -(-total // per_page)))
    return Pagination(fetch_page(query, page, per_page), total, page, per_page)


def duration(seconds):
    """A human duration for progress pages: "42 s", "3 min 5 s", "1 h 20 min" ("—" when unknown)."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
