"""GET /api/docs: the API reference, rendered by the vendored Redoc from /api/v1/openapi.json."""
from flask import Blueprint, make_response, render_template, url_for

from nudge import CSP

bp = Blueprint("api_docs", __name__)

# Redoc injects its styles at run time (styled-components) and embeds its icon font as a data: URL;
# this page alone allows both. Scripts stay 'self' only (Redoc then searches without a worker).
DOCS_CSP = (CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
            .replace("font-src 'self'", "font-src 'self' data:"))


@bp.get("/api/docs")
def index():
    response = make_response(render_template("api/docs.html", spec_url=url_for("api.openapi")))
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["Cache-Control"] = "no-store"
    return response
