"""Errors become the API's JSON envelope under /api/ and readable pages everywhere else."""
import logging

from flask import render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from nudge.blueprints.api.errors import error_response
from nudge.errors import DomainError
from nudge.extensions import db

log = logging.getLogger("nudge")

PAGE_MESSAGES = {
    400: ("Bad request", "The request could not be understood. Go back and try again."),
    403: ("Not allowed", "Your role does not allow this. Ask an owner or admin of your account."),
    404: ("Page not found", "The page you asked for does not exist or has moved."),
    405: ("Not allowed", "This page does not accept that kind of request."),
    413: ("Too large", "What you sent (an upload or a form) is larger than this server accepts."),
    429: ("Slow down", "Too many requests. Wait a moment and try again."),
    500: ("Something went wrong", "An unexpected error happened on our side. It has been logged; try again."),
}


def wants_json():
    return request.path.startswith(("/api/", "/hooks/"))  # webhooks answer in the API's envelope too


def error_page(status, message=None):
    title, default = PAGE_MESSAGES.get(status, PAGE_MESSAGES[500] if status >= 500 else PAGE_MESSAGES[400])
    template = f"errors/{status}.html" if status in (403, 404, 500) else "errors/error.html"
    return render_template(template, status=status, title=title, message=message or default), status


def init_app(app):
    @app.errorhandler(DomainError)
    def domain_error(exc):
        db.session.rollback()
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        if wants_json():
            return error_response(exc.status, exc.message, exc.details, code=exc.code, headers=headers)
        body, status = error_page(exc.status, exc.message)
        return body, status, headers or {}

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        if wants_json():
            return error_response(400, exc.description)
        return error_page(400, "This form has expired or did not come from this site. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if wants_json():
            headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
            message = {404: "No such API endpoint.", 405: f"Method {request.method} is not allowed here."}.get(
                exc.code, exc.description)
            return error_response(exc.code, message, headers=headers)
        # A rate limit with its own message (the sign-in pages') says what to do; others get the generic text.
        limit = getattr(exc, "limit", None)
        return error_page(exc.code, exc.description if limit is not None and limit.error_message else None)

    @app.errorhandler(Exception)
    def unexpected_error(exc):
        if isinstance(exc, HTTPException):
            return http_error(exc)
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return error_response(500, "Internal error; it has been logged.")
        return error_page(500)
