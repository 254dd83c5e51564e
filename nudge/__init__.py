"""NudgeCampaign: self-hostable email marketing."""
import logging

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from nudge.config import database_engine_options, instance_path, load_config

__version__ = "0.1.0"


def create_app(config=None):
    """The application factory; config overrides what the environment says (tests use it)."""
    app = Flask(__name__, instance_path=instance_path())
    app.config.update(load_config())
    if config:
        app.config.update(config)
        if "SQLALCHEMY_DATABASE_URI" in config and "SQLALCHEMY_ENGINE_OPTIONS" not in config:
            # The engine options of the database actually used (tests and tools pass their own URL).
            app.config["SQLALCHEMY_ENGINE_OPTIONS"] = database_engine_options(config["SQLALCHEMY_DATABASE_URI"])
    if app.config.get("TRUSTED_PROXIES"):
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    _register_body_limits(app)  # first: CSRF and the rate limiter may read the body in their own hooks
    _init_extensions(app)
    _register_blueprints(app)
    _register_security_headers(app)

    @app.context_processor
    def navigation_helpers():
        from nudge.blueprints.outbox import outbox_enabled
        return {"has_endpoint": lambda name: name in app.view_functions,
                "outbox_enabled": lambda: outbox_enabled(app.config)}

    from nudge import errorhandlers, tasks
    errorhandlers.init_app(app)
    tasks.init_app(app)
    logging.getLogger("nudge").setLevel(app.config.get("LOG_LEVEL", "INFO"))
    return app


def _init_extensions(app):
    from nudge import models  # noqa: F401  (one metadata for Alembic)
    from nudge.extensions import csrf, db, htmx, jwt, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=_migrations_dir(), compare_type=True, render_as_batch=True)
    login_manager.init_app(app)
    jwt.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    limiter.init_app(app)

    from nudge.blueprints.auth import load_user
    login_manager.user_loader(load_user)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"


def _migrations_dir():
    import os
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def _register_blueprints(app):
    from nudge.blueprints import (auth, campaigns, contacts, dashboard, editor, hooks, imports, media, outbox,
                                  segments, sending_settings, settings, templates, tracking)
    from nudge.blueprints.api import bp as api_bp
    from nudge.extensions import csrf

    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(settings.bp, url_prefix="/settings")
    app.register_blueprint(sending_settings.bp, url_prefix="/settings/sending")
    app.register_blueprint(contacts.bp, url_prefix="/contacts")
    app.register_blueprint(imports.bp, url_prefix="/imports")
    app.register_blueprint(segments.bp, url_prefix="/segments")
    app.register_blueprint(templates.bp, url_prefix="/templates")
    app.register_blueprint(campaigns.bp, url_prefix="/campaigns")
    app.register_blueprint(editor.bp, url_prefix="/templates")
    app.register_blueprint(media.bp)
    app.register_blueprint(outbox.bp, url_prefix="/outbox")
    csrf.exempt(tracking.bp)  # one-click unsubscribes come from mailbox providers, without a session
    app.register_blueprint(tracking.bp)
    csrf.exempt(hooks.bp)  # providers' webhooks: signed by the provider, no session
    app.register_blueprint(hooks.bp)
    csrf.exempt(api_bp)  # bearer tokens, no cookies: CSRF does not apply
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    from nudge.blueprints.api.docs import bp as docs_bp
    app.register_blueprint(docs_bp)


def _register_body_limits(app):
    """Per-endpoint body limits (config.py, docs/security.md): webhooks HOOK_MAX_CONTENT_LENGTH; API bodies
    API_MAX_CONTENT_LENGTH; dashboard forms FORM_MAX_CONTENT_LENGTH (Werkzeug reads a URL-encoded form
    whole, whatever MAX_FORM_MEMORY_SIZE says); uploads (multipart, outside the webhooks) the full
    MAX_CONTENT_LENGTH. Beyond: 413, in the API's envelope under /api/ and /hooks/."""
    @app.before_request
    def limit_body():
        if request.path.startswith("/hooks/"):
            request.max_content_length = app.config["HOOK_MAX_CONTENT_LENGTH"]
        elif request.mimetype == "multipart/form-data":
            return
        elif request.path.startswith("/api/"):
            request.max_content_length = app.config["API_MAX_CONTENT_LENGTH"]
        else:
            request.max_content_length = app.config["FORM_MAX_CONTENT_LENGTH"]


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def _register_security_headers(app):
    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if not request.path.startswith(("/api/", "/static/")):
            response.vary.add("HX-Request")
            response.headers.setdefault("Cache-Control", "no-store")
        return response
