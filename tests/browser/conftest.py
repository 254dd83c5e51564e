"""Fixtures of the browser tests: Playwright drives Debian's Chromium against the product served over HTTP.

Skipped with the reason when Playwright or Chromium is missing, unless the CI environment variable is
set: then a missing browser fails the run (make test installs both)."""
import os
import re
import threading

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD
from tests.delivery.conftest import free_port

CHROMIUM = os.environ.get("NUDGE_TEST_CHROMIUM", "/usr/bin/chromium")


def _missing_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set NUDGE_TEST_CHROMIUM)"
    return None


@pytest.fixture
def chromium():
    reason = _missing_browser()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def server_config():
    """Configuration a test module adds to its server's (override the fixture)."""
    return {}


@pytest.fixture
def server(make_app, server_config):
    """The product served over HTTP from a thread, CSRF checks on, MFA not required for the test user."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    app = make_app(REQUIRE_MFA=False, WTF_CSRF_ENABLED=True, BASE_URL=base_url, **server_config)
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield app, base_url
    httpd.shutdown()
    thread.join(timeout=10)


def sign_in(page, base_url, user):
    """Sign in through the login form and wait until the dashboard answers."""
    page.goto(f"{base_url}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))
