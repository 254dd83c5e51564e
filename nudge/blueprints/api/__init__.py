"""The JSON API under /api/v1 (docs/api.md): OAuth 2.0 client credentials, the spec's envelope,
per-account rate limits, pagination and a generated OpenAPI document.

A resource module defines its routes on `bp` with `api_route(scope, summary=..., ...)` from
auth.py, answers with `envelope()` / `paginated_response()`, reads bodies with `json_body()`
and is imported at the bottom of this file."""
import math
import time

from flask import Blueprint, request

from nudge.extensions import limiter

bp = Blueprint("api", __name__)

from nudge.blueprints.api import auth  # noqa: E402  (registers the JWT error loaders)

# One shared counter per account across every API endpoint (the token endpoint has its own per-IP limit).
limiter.shared_limit(auth.plan_rate_limit, scope="api", key_func=auth.rate_limit_key,
                     error_message=auth.rate_limit_message)(bp)


@bp.after_request
def rate_limit_headers(response):
    """The IETF RateLimit-* fields next to Flask-Limiter's X-RateLimit-* (which gives an epoch reset)."""
    current = limiter.current_limit if limiter.enabled else None
    if current is not None:
        try:
            amount, window = current.limit.amount, current.limit.get_expiry()
            response.headers["RateLimit-Limit"] = str(amount)
            response.headers["RateLimit-Remaining"] = str(max(0, current.remaining))
            response.headers["RateLimit-Reset"] = str(max(0, math.ceil(current.reset_at - time.time())))
            response.headers["RateLimit-Policy"] = f"{amount};w={window}"
        except Exception:  # noqa: BLE001 - a storage hiccup must not turn an answer into a 500
            pass
    return response


def _retry_after_only_when_limited(response):
    """Flask-Limiter puts Retry-After on every response; on the API it means "wait", so only on 429/503."""
    if response.status_code not in (429, 503) and request.path.startswith("/api/"):
        response.headers.pop("Retry-After", None)
    return response


@bp.record_once
def _run_after_the_limiter(state):
    # App-wide after_request hooks run last-registered-first; the limiter registered first, so
    # this hook goes before it in the list to run after it.
    state.app.after_request_funcs.setdefault(None, []).insert(0, _retry_after_only_when_limited)


from nudge.blueprints.api import account, oauth, spec  # noqa: E402,F401
from nudge.blueprints.api import campaigns, contacts, custom_fields, imports, segments, suppressions, templates  # noqa: E402,F401
