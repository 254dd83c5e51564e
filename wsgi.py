"""WSGI entry point for production servers: `gunicorn wsgi:app`."""
from nudge import create_app

app = create_app()
