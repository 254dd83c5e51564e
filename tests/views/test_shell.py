"""The dashboard shell: security headers, error pages, navigation by role, nothing from another origin."""
import pathlib
import re

import nudge

TEMPLATES = pathlib.Path(nudge.__file__).parent / "templates"
STATIC = pathlib.Path(nudge.__file__).parent / "static"


def test_every_page_sends_the_security_headers(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "HX-Request" in response.headers["Vary"]


def test_unknown_page_gets_a_readable_404(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.get("/no-such-page")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "Page not found" in page and "Go to the dashboard" in page


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_navigation_shows_only_what_the_role_may_use(client, make_account, make_user, login):
    account, owner = make_account()
    viewer = make_user(account, role="viewer")
    login(client, owner)
    page = client.get("/").get_data(as_text=True)
    for label in ("Team", "API clients", "Audit log", "Account", "Security"):
        assert f">{label}</a>" in page
    client.post("/logout")
    login(client, viewer)
    page = client.get("/").get_data(as_text=True)
    assert ">Account</a>" in page and ">Security</a>" in page
    for label in ("Team", "API clients", "Audit log"):
        assert f">{label}</a>" not in page


def test_dashboard_shows_the_getting_started_checklist(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    page = client.get("/").get_data(as_text=True)
    assert "Get started" in page
    assert "Turn on two-factor authentication" in page and "Invite a teammate" in page
    assert "1 / 6" in page  # the test account has two-factor authentication on


def test_the_checklist_ticks_off_contacts_and_a_first_campaign(client, make_account, login):
    from nudge.extensions import db
    from nudge.models import Campaign, Contact
    account, owner = make_account()
    login(client, owner)

    def done(label):
        page = client.get("/").get_data(as_text=True)
        item = re.search(r'<li class="(done)?">\s*<span[^>]*>[^<]*</span>\s*<a href="[^"]*">' + re.escape(label), page)
        assert item, label
        return item.group(1) == "done"

    assert not done("Import your contacts") and not done("Send your first campaign")
    db.session.add(Contact(account_id=account.id, email="gone@shop.example", status="deleted"))
    db.session.add(Campaign(account_id=account.id, name="Draft", status="draft"))
    db.session.commit()
    assert not done("Import your contacts") and not done("Send your first campaign")
    db.session.add(Contact(account_id=account.id, email="ann@shop.example", status="active"))
    db.session.add(Campaign(account_id=account.id, name="Spring", status="sent"))
    db.session.commit()
    assert done("Import your contacts") and done("Send your first campaign")


def test_no_template_or_stylesheet_loads_anything_from_another_origin():
    external = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
    for path in list(TEMPLATES.rglob("*.html")):
        assert not external.search(path.read_text()), f"{path} loads from another origin"
    for path in STATIC.rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", path.read_text()), f"{path} loads from another origin"


def test_templates_have_no_inline_scripts_or_styles():
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline <script> in {path}"
        assert not re.search(r"\son\w+\s*=", text), f"inline event handler in {path}"
        assert not re.search(r"\sstyle\s*=", text), f"inline style attribute in {path}"


# Public pages whose token in the URL is the authorisation (no session, so no CSRF token to carry).
CSRF_EXEMPT_TEMPLATES = {"tracking/unsubscribe.html"}


def test_every_form_that_posts_carries_a_csrf_token():
    for path in TEMPLATES.rglob("*.html"):
        if path.relative_to(TEMPLATES).as_posix() in CSRF_EXEMPT_TEMPLATES:
            continue
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", path.read_text(), re.S | re.I):
            assert "csrf_token" in form, f"a POST form in {path} has no CSRF token"
