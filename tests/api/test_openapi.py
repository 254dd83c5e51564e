"""The OpenAPI 3.1 document generated from the code, and the docs page that renders it."""
from nudge.blueprints.api.openapi import openapi_path
from nudge.services.permissions import SCOPES


def test_openapi_document(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/api/v1/account", "/api/v1/oauth/token"}
    assert set(doc["paths"]["/api/v1/account"]) == {"get", "put"}
    assert doc["paths"]["/api/v1/account"]["put"]["security"] == [{"oauth2": ["account:admin"]}]
    assert doc["paths"]["/api/v1/oauth/token"]["post"]["security"] == [{"clientBasic": []}, {}]
    flow = doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/api/v1/oauth/token"
    assert set(flow["scopes"]) == set(SCOPES)
    assert {"Error", "Account", "PageMeta", "PageLinks"} <= set(doc["components"]["schemas"])
    assert doc["paths"]["/api/v1/account"]["put"]["responses"]["403"] == {"$ref": "#/components/responses/Forbidden"}


def test_openapi_document_validates(client):
    from openapi_spec_validator import validate
    validate(client.get("/api/v1/openapi.json").get_json())


def test_every_operation_lists_the_errors_that_come_with_its_shape(client):
    """What tests/api/test_openapi_conformance.py checks by calling, checked on the document itself."""
    doc = client.get("/api/v1/openapi.json").get_json()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            statuses, where = set(op["responses"]), f"{method.upper()} {path}"
            assert "429" in statuses, where
            if "requestBody" in op:
                assert {"400", "413"} <= statuses, where
            if op["security"] != [] and path != "/api/v1/oauth/token":
                assert {"400", "401"} <= statuses, where
            if "{" in path:
                assert "404" in statuses, where
    responses = doc["components"]["responses"]
    assert responses["PayloadTooLarge"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    assert "PAYLOAD_TOO_LARGE" in doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"][
        "code"]["enum"]


def test_ids_in_bodies_and_queries_document_their_404(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path, method in (("/api/v1/campaigns", "post"), ("/api/v1/templates", "post"), ("/api/v1/contacts", "get"),
                         ("/api/v1/contacts/export", "get"), ("/api/v1/contacts/tags", "post")):
        assert "404" in paths[path][method]["responses"], f"{method.upper()} {path}"


def test_template_content_is_nullable_and_the_csv_upload_answers_202(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    version = doc["components"]["schemas"]["TemplateVersion"]["properties"]
    assert "null" in version["content_json"]["type"] and "null" in version["content_source"]["type"]
    responses = doc["paths"]["/api/v1/contacts/import"]["post"]["responses"]
    assert responses["202"]["content"]["application/json"]["schema"]["properties"]["data"] == {
        "$ref": "#/components/schemas/Import"}


def test_every_api_route_is_documented(app):
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "api.openapi":
            path = openapi_path(rule)[0]
            assert path in doc["paths"], f"{rule.rule} has no document() / api_route() metadata"


def test_docs_page(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="api-docs"' in html
    assert 'data-spec-url="/api/v1/openapi.json"' in html
    assert "/static/js/api-docs.js" in html
    assert "<script>" not in html  # no inline scripts
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp


def test_the_vendored_redoc_loads_its_logo_from_this_server(client):
    """Nothing on the docs page loads from another origin: Redoc's footer logo is served here (the browser run
    in tests/browser/test_console_browser.py watches the requests themselves)."""
    bundle = client.get("/static/vendor/redoc/redoc.standalone.js").get_data(as_text=True)
    assert "cdn.redoc.ly" not in bundle
    for logo in ("logo-mini.svg", "logo-mini-full.svg"):
        assert f"/static/vendor/redoc/{logo}" in bundle
        assert client.get(f"/static/vendor/redoc/{logo}").status_code == 200


def test_docs_page_leads_back_to_the_dashboard_when_signed_in(client, make_account, login):
    _, owner = make_account()
    assert "Sign in" in client.get("/api/docs").get_data(as_text=True)
    login(client, owner)
    html = client.get("/api/docs").get_data(as_text=True)
    assert "Back to the dashboard" in html
    assert 'id="api-docs"' in html


def test_path_parameters_from_converters():
    from werkzeug.routing import Rule
    path, parameters = openapi_path(Rule("/api/v1/contacts/<uuid:contact_id>/steps/<int:n>/<name>"))
    assert path == "/api/v1/contacts/{contact_id}/steps/{n}/{name}"
    assert [(p["name"], p["schema"]) for p in parameters] == [
        ("contact_id", {"type": "string", "format": "uuid"}), ("n", {"type": "integer"}), ("name", {"type": "string"})]
